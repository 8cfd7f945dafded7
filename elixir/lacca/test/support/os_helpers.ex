defmodule Lacca.OSHelpers do
  @moduledoc false
  # Only the OS can tell that a process vanished: wait_gone/2 is the one
  # place in the suite that polls (/proc/<pid>, with a deadline).

  @doc "Whether OS process `pid` exists and is not a zombie."
  def os_alive?(pid) when is_integer(pid) do
    case File.read("/proc/#{pid}/stat") do
      {:ok, stat} -> state(stat) not in ["Z", "X"]
      {:error, _} -> false
    end
  end

  @doc "Waits until none of `pids` is alive; returns the ones still alive at the deadline."
  def wait_gone(pids, timeout \\ 2_000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    poll_gone(List.wrap(pids), deadline)
  end

  defp poll_gone(pids, deadline) do
    case Enum.filter(pids, &os_alive?/1) do
      [] ->
        []

      alive ->
        if System.monotonic_time(:millisecond) >= deadline do
          alive
        else
          receive do
          after
            5 -> poll_gone(alive, deadline)
          end
        end
    end
  end

  @doc "Waits until OS process `pid` is in `state` (\"T\": stopped, ...)."
  def wait_state(pid, state, timeout \\ 2_000) do
    wait_until(fn -> state(File.read!("/proc/#{pid}/stat")) == state end, timeout)
  end

  @doc "Waits until `fun` (a question about OS state) returns true."
  def wait_until(fun, timeout \\ 2_000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    poll_until(fun, deadline)
  end

  defp poll_until(fun, deadline) do
    cond do
      fun.() ->
        true

      System.monotonic_time(:millisecond) >= deadline ->
        false

      true ->
        receive do
        after
          5 -> poll_until(fun, deadline)
        end
    end
  end

  @doc "Live (non-zombie) members of process group `pgid`."
  def group_members(pgid) do
    for dir <- File.ls!("/proc"),
        Regex.match?(~r/^\d+$/, dir),
        {:ok, stat} <- [File.read("/proc/#{dir}/stat")],
        {:ok, state, _ppid, pgrp} <- [parse(stat)],
        state not in ["Z", "X"],
        pgrp == pgid,
        do: String.to_integer(dir)
  end

  defp state(stat) do
    case parse(stat) do
      {:ok, state, _, _} -> state
      :error -> "X"
    end
  end

  # /proc/<pid>/stat: "pid (comm) state ppid pgrp ..."; comm may hold ") ".
  defp parse(stat) do
    case Regex.run(~r/^\d+ \(.*\) (\S) (\d+) (\d+) /s, stat) do
      [_, state, ppid, pgrp] -> {:ok, state, String.to_integer(ppid), String.to_integer(pgrp)}
      nil -> :error
    end
  end

  @doc """
  The OS pid of the resin that runs the OS process of the server `pid`
  (resin spawns its children itself: their parent).
  """
  def resin_of(pid) do
    os_pid = Lacca.os_pid(pid)
    {:ok, _state, ppid, _pgrp} = parse(File.read!("/proc/#{os_pid}/stat"))
    ppid
  end

  @doc """
  Bytes of the (reference-counted) binaries process `pid` holds after a
  garbage collection: what it keeps of the output it received.
  """
  def held_binary_bytes(pid) do
    :erlang.garbage_collect(pid)
    {:binary, bins} = Process.info(pid, :binary)
    bins |> Enum.uniq_by(&elem(&1, 0)) |> Enum.map(&elem(&1, 1)) |> Enum.sum()
  end

  @doc """
  Whether the daemon `daemon` still has process `id` (resin has not reported
  its exit yet).
  """
  def daemon_has?(daemon, id),
    do: Enum.any?(Lacca.Daemon.processes(daemon), &(elem(&1, 0) == id))

  @doc "Sends SIGKILL to OS process `pid`."
  def os_kill(pid) do
    {_, 0} = System.cmd("kill", ["-KILL", to_string(pid)])
    :ok
  end

  @doc """
  The OS processes that `receiver` (a stream consumer, a run/3 caller or a
  process server) is registered for with the shared daemons:
  `[{daemon_pid, id, os_pid}]`.
  """
  def lacca_procs_of(receiver) do
    for name <- Lacca.Daemon.shared(),
        daemon = Process.whereis(name),
        daemon != nil,
        {id, ^receiver, _acker, os_pid} <- Lacca.Daemon.processes(daemon),
        do: {daemon, id, os_pid}
  end

  @doc """
  Passes `stream` through, and sends `{:stream_proc, {daemon, id, os_pid}}`
  to the consumer when the first element arrives.
  """
  def tap_proc(stream) do
    me = self()

    Stream.transform(stream, false, fn
      element, false ->
        [proc] = lacca_procs_of(me)
        send(me, {:stream_proc, proc})
        {[element], true}

      element, true ->
        {[element], true}
    end)
  end

  @doc "What is buffered on stdout now, appended to `acc` (reads without waiting)."
  def read_all(pid, acc) do
    case Lacca.read_stdout(pid, 0) do
      {:ok, ""} -> acc
      {:ok, data} -> read_all(pid, acc <> data)
    end
  end

  @doc "Reads lines from a buffer-mode lacca process until `n` lines arrived."
  def read_lines(pid, n, acc \\ "") do
    lines = String.split(acc, "\n", trim: true)

    if length(lines) >= n and String.ends_with?(acc, "\n") do
      lines
    else
      {:ok, data} = Lacca.read_stdout(pid, 5_000)
      if data == "", do: raise("no more output; got so far: #{inspect(acc)}")
      read_lines(pid, n, acc <> data)
    end
  end
end
