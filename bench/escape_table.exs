# Nothing escapes, counted: N OS processes, each starting every kind of
# escapee, then one way of ending them; processes alive before and 2 s after.
#
#   mix run bench/escape_table.exs [N]            (cgroups where available)
#   LACCA_CGROUPS=0 mix run bench/escape_table.exs [N]   (the process tree only)
#
# Each process (sh) starts: a grandchild in its group, a setsid grandchild, a
# double-forked daemon that ignores TERM and HUP, a grandchild that ignores
# TERM, a fork loop in its own session, and an env -i grandchild under a
# living parent; it prints their pids. Counted: those pids, the leaders, and
# every process carrying a cookie of the resins involved (the fork loop's
# current sleep). Not part of the tests; prints a table.

n = System.argv() |> List.first("100") |> String.to_integer()
if System.get_env("LACCA_CGROUPS") == "0", do: Application.put_env(:lacca, :cgroups, false)
{:ok, _} = Application.ensure_all_started(:lacca)

defmodule EscapeTable do
  # One pid printed per kind, then the leader waits for its stdin to close
  # (shared with tests/test_escape.py).
  @external_resource Path.expand("../tests/escapees.sh", __DIR__)
  @script File.read!(@external_resource)
  @kinds 6

  def script, do: @script
  def kinds, do: @kinds

  def alive?(pid) do
    case File.read("/proc/#{pid}/stat") do
      {:ok, stat} ->
        [_, rest] = String.split(stat, ") ", parts: 2)
        String.first(rest) not in ["Z", "X"]

      _ ->
        false
    end
  end

  def cookie_prefix(os_pid) do
    environ = File.read!("/proc/#{os_pid}/environ")

    "RESIN_TREE=" <> value =
      environ |> String.split(<<0>>) |> Enum.find(&String.starts_with?(&1, "RESIN_TREE="))

    [resin, start, _] = String.split(value, ".")
    "RESIN_TREE=#{resin}.#{start}."
  end

  def read_pids(pid, acc \\ "") do
    lines = String.split(acc, "\n", trim: true)

    if length(lines) >= @kinds and String.ends_with?(acc, "\n") do
      Enum.map(lines, &String.to_integer/1)
    else
      {:ok, data} = Lacca.read_stdout(pid, 10_000)
      read_pids(pid, acc <> data)
    end
  end

  # The processes of the run: printed pids and leaders still alive, plus
  # every process carrying a cookie of the resins (one pass over /proc).
  def count(pids, prefixes) do
    holders =
      for name <- File.ls!("/proc"),
          {pid, ""} <- [Integer.parse(name)],
          {:ok, environ} <- [File.read("/proc/#{pid}/environ")],
          Enum.any?(
            prefixes,
            &(String.starts_with?(environ, &1) or
                String.contains?(environ, <<0>> <> &1))
          ),
          alive?(pid),
          do: pid

    (Enum.filter(pids, &alive?/1) ++ holders) |> Enum.uniq() |> length()
  end

  # {left at 2 s, ms until none was left (nil: not within 10 s)}. The known
  # pids are checked first (cheap); the /proc scan for cookie holders (slow
  # with thousands of processes) only once they are all gone, and at 2 s.
  def settle(pids, prefixes, t0, at2 \\ nil) do
    ms = System.monotonic_time(:millisecond) - t0
    alive = Enum.count(pids, &alive?/1)

    c =
      if alive == 0 or (at2 == nil and ms >= 2_000),
        do: count(pids, prefixes),
        else: alive

    at2 = if at2 == nil and ms >= 2_000, do: c, else: at2

    cond do
      c == 0 -> {at2 || 0, ms}
      ms >= 10_000 -> {at2, nil}
      true -> Process.sleep(20) && settle(pids, prefixes, t0, at2)
    end
  end

  # Starts n processes (owned by `owner_fun`), returns {servers, all pids, prefixes}.
  def start(n, opts) do
    started =
      1..n
      |> Task.async_stream(
        fn _ ->
          {:ok, pid} = Lacca.start("sh", ["-c", @script], opts)
          {pid, [Lacca.os_pid(pid) | read_pids(pid)]}
        end,
        max_concurrency: 16,
        timeout: 60_000
      )
      |> Enum.map(fn {:ok, r} -> r end)

    pids = Enum.flat_map(started, &elem(&1, 1))

    prefixes =
      started |> Enum.map(fn {_, [leader | _]} -> cookie_prefix(leader) end) |> Enum.uniq()

    {Enum.map(started, &elem(&1, 0)), pids, prefixes}
  end

  def row(name, n, opts, action) do
    {servers, pids, prefixes} = start(n, opts)
    before = count(pids, prefixes)
    t0 = System.monotonic_time(:millisecond)
    action.(servers)
    {left, ms} = settle(pids, prefixes, t0)
    IO.puts("| #{name} | #{before} → #{left} | #{if ms, do: "#{ms} ms", else: "> 10 s"} |")
  end
end

mode =
  if System.get_env("LACCA_CGROUPS") == "0",
    do: "process tree",
    else: elem(Lacca.info(), 1).containment

IO.puts("\n#{n} processes of #{EscapeTable.kinds()} escapee kinds each; containment: #{mode}\n")
IO.puts("| action | processes before → after 2 s | all gone after |")
IO.puts("|---|---|---|")

EscapeTable.row("`Lacca.stop/1` on all", n, [kill_timeout: 500], fn servers ->
  servers |> Task.async_stream(&Lacca.stop/1, max_concurrency: n, timeout: 30_000) |> Stream.run()
end)

EscapeTable.row("`Lacca.kill/1`", n, [], fn servers -> Enum.each(servers, &Lacca.kill/1) end)

EscapeTable.row(
  "owner killed (`owner:`, graceful stop)",
  n,
  [owner: spawn(fn -> Process.sleep(:infinity) end), kill_timeout: 500],
  fn servers ->
    owner = servers |> hd() |> :sys.get_state() |> Map.get(:owner)
    Process.exit(owner, :kill)
  end
)

EscapeTable.row("resin SIGKILL (every shared resin), lacca running", n, [], fn _servers ->
  resins = for name <- Lacca.Daemon.shared(), pid = Lacca.Daemon.resin_os_pid(name), do: pid
  System.cmd("kill", ["-KILL" | Enum.map(resins, &Integer.to_string/1)])
end)
