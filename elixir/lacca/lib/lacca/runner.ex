defmodule Lacca.Runner do
  @moduledoc false
  # Lacca.run/3 runs in the caller's process: no GenServer per OS process.
  # The caller registers itself with the daemon as the receiver of the id, so
  # the daemon still SIGKILLs the process group if the caller dies, and then
  # collects frames with a selective receive on its own port and id.

  alias Lacca.{Daemon, Protocol, Result, Signal}

  @max_data 65_530
  @stdin_window 4
  @sigkill 9

  @spec run(binary(), [binary()], map()) :: {:ok, Result.t()} | {:error, Lacca.spawn_error()}
  def run(exec, args, spec) do
    spawn_opts =
      if spec.input == nil and not List.keymember?(spec.spawn, :stdin, 0),
        do: spec.spawn ++ [{:stdin, :null}],
        else: spec.spawn

    case daemon(spec) do
      {:ok, daemon, dedicated?} ->
        try do
          spawn_and_collect(daemon, exec, args, spawn_opts, spec)
        after
          if dedicated?, do: Daemon.release(daemon)
        end

      {:error, reason} ->
        {:error, reason}
    end
  end

  defp daemon(%{daemon: :shared}), do: {:ok, Daemon.pick(), false}

  defp daemon(%{daemon: :dedicated}) do
    case Daemon.start_dedicated(self()) do
      {:ok, pid} -> {:ok, pid, true}
      {:error, reason} -> {:error, reason}
    end
  end

  defp spawn_and_collect(daemon, exec, args, spawn_opts, spec) do
    case Daemon.spawn(daemon, exec, args, spawn_opts, spec.window, self()) do
      {:ok, dpid, port, id} ->
        dmref = Process.monitor(dpid)

        receive do
          {:"$lacca_event", ^port, {:spawned, ^id, _os_pid}} ->
            collect_started(port, id, dmref, spec)

          {:"$lacca_event", ^port, {:spawn_error, ^id, reason}} ->
            Process.demonitor(dmref, [:flush])
            {:error, reason}

          {:DOWN, ^dmref, :process, _, _} ->
            {:error, :resin_down}
        end

      {:error, reason} ->
        {:error, reason}
    end
  end

  defp collect_started(port, id, dmref, spec) do
    {acc, into} = Collectable.into(spec.into)
    now = System.monotonic_time(:millisecond)

    st = %{
      port: port,
      id: id,
      dmref: dmref,
      acc: acc,
      into: into,
      err: [],
      ungranted_out: 0,
      ungranted_err: 0,
      threshold: div(spec.window, 4),
      frames: if(spec.input, do: chunks(spec.input), else: []),
      close: spec.input != nil,
      inflight: 0,
      deadline: if(spec.timeout == :infinity, do: :infinity, else: now + spec.timeout),
      kill_timeout: spec.kill_timeout,
      stop_signal: spec.stop_signal,
      timed_out: false
    }

    try do
      st |> pump() |> loop()
    catch
      kind, reason ->
        into.(acc, :halt)
        :erlang.raise(kind, reason, __STACKTRACE__)
    end
  end

  defp loop(%{port: port, id: id, dmref: dmref} = st) do
    receive do
      {:"$lacca", ^port, <<0x21, ^id::32, data::binary>>} ->
        acc = st.into.(st.acc, {:cont, data})
        ungranted = st.ungranted_out + byte_size(data)
        ungranted = Protocol.regrant(port, id, :stdout, ungranted, st.threshold)
        loop(%{st | acc: acc, ungranted_out: ungranted})

      {:"$lacca", ^port, <<0x22, ^id::32, data::binary>>} ->
        ungranted = st.ungranted_err + byte_size(data)
        ungranted = Protocol.regrant(port, id, :stderr, ungranted, st.threshold)
        loop(%{st | err: [st.err | data], ungranted_err: ungranted})

      {:"$lacca", ^port, <<0x23, ^id::32, code>>} ->
        # A failed write (the child closed its stdin) drops the rest.
        st = %{st | inflight: st.inflight - 1}
        st = if code == 0, do: st, else: %{st | frames: []}
        loop(pump(st))

      {:"$lacca_event", ^port, {:exit, ^id, status}} ->
        Process.demonitor(dmref, [:flush])

        status =
          cond do
            st.timed_out -> :timeout
            match?({:exit, _}, status) -> status
            true -> {:signal, Signal.to_name(elem(status, 1))}
          end

        {:ok,
         %Result{
           stdout: st.into.(st.acc, :done),
           stderr: IO.iodata_to_binary(st.err),
           status: status
         }}

      {:"$lacca_event", ^port, {_, ^id, _}} ->
        loop(st)

      {:"$lacca_event", ^port, {:reply, ^id, _, _}} ->
        loop(st)

      {:DOWN, ^dmref, :process, _, _} ->
        st.into.(st.acc, :halt)
        {:error, :resin_down}
    after
      timeout(st) -> loop(deadline_passed(st))
    end
  end

  defp timeout(%{deadline: :infinity}), do: :infinity

  defp timeout(%{deadline: deadline}),
    do: max(deadline - System.monotonic_time(:millisecond), 0)

  # First deadline: ask the process to stop; second: kill it.
  defp deadline_passed(%{timed_out: false} = st) do
    signal(st, st.stop_signal)
    now = System.monotonic_time(:millisecond)
    %{st | timed_out: true, deadline: now + st.kill_timeout}
  end

  defp deadline_passed(st) do
    signal(st, @sigkill)
    %{st | deadline: :infinity}
  end

  defp signal(st, signo),
    do: command(st, Protocol.control({:signal, st.id, :run, signo, true}))

  defp pump(%{frames: [frame | rest], inflight: n} = st) when n < @stdin_window do
    command(st, Protocol.stdin(st.id, frame))
    pump(%{st | frames: rest, inflight: n + 1})
  end

  defp pump(%{frames: [], close: true} = st) do
    command(st, Protocol.control({:close_stdin, st.id, :run}))
    %{st | close: false}
  end

  defp pump(st), do: st

  defp chunks(input) do
    bin = IO.iodata_to_binary(input)
    split(bin, [])
  end

  defp split(bin, acc) when byte_size(bin) <= @max_data do
    if bin == "", do: Enum.reverse(acc), else: Enum.reverse([bin | acc])
  end

  defp split(bin, acc) do
    <<head::binary-size(@max_data), rest::binary>> = bin
    split(rest, [head | acc])
  end

  defp command(%{port: port}, frame), do: Protocol.command(port, frame)
end
