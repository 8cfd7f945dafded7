# Where the time of one `Lacca.run("true", [])` goes (docs/performance.md,
# "Spawn: where the microseconds go").
#
#   MIX_ENV=prod mix run bench/spawn_profile.exs [n]
#
# Times the stages of the run path from outside lacca's modules (the same
# calls Lacca.run/3 makes, one after another), the same spawn sent over a
# bare port to resin (no lacca code in the way), and plain Port, all
# interleaved in blocks. Prints a table of medians in microseconds on stdout.

defmodule SpawnProfile do
  alias Lacca.{Channel, Daemon, Options, Protocol}
  require Channel

  @true_exe System.find_executable("true")

  def now, do: System.monotonic_time(:nanosecond)

  # One Lacca.run("true", []) in stages; returns the time points.
  def lacca_staged do
    t0 = now()
    # Where the child starts: the BEAM's OS pid, cached, that resin reads the
    # working directory of ({:cd_of, pid}); Options.run!([]) looks it up itself.
    _ = :persistent_term.get({Options, :os_pid}, nil)
    tc = now()
    {exec, args} = Options.command!("true", [])
    spec = Options.run!([])
    t1 = now()
    daemon = Daemon.pick()
    spawn_opts = spec.spawn ++ [{:stdin, :null}]
    t2 = now()
    {:ok, dpid, port, id} = Daemon.spawn(daemon, exec, args, spawn_opts, spec.max_buffer, self())
    t3 = now()
    chan = Channel.open(port, id, dpid, spec.max_buffer)
    {:ok, _os_pid, _direct} = Channel.await_spawned(chan)

    receive do
      Channel.event(^port, {:exit, ^id, {:exit, 0}}) -> :ok
    end

    _ = Channel.close(chan)
    t4 = now()
    {t1 - tc, t2 - t1, t3 - t2, t4 - t3, t4 - t0, tc - t0}
  end

  def lacca_run do
    t0 = now()
    {:ok, %{status: {:exit, 0}}} = Lacca.run("true", [])
    now() - t0
  end

  def port_run do
    t0 = now()
    port = Port.open({:spawn_executable, @true_exe}, [:binary, :exit_status])

    receive do
      {^port, {:exit_status, 0}} -> :ok
    end

    now() - t0
  end

  # A resin of our own over a bare port: the protocol only.
  def bare_open(resin \\ nil) do
    resin = resin || elem(Lacca.Resin.find(), 1)
    port = Port.open({:spawn_executable, resin}, [:binary, {:packet, 2}, :exit_status])
    Port.command(port, Protocol.hello())

    receive do
      {^port, {:data, <<1, 1>>}} -> port
    end
  end

  # What lacca sends (a resin of PROFILE_OTHER_RESIN must know cd_of too).
  def bare_run(port, id) do
    beam = :persistent_term.get({Options, :os_pid})
    t0 = now()

    {:ok, [frame]} =
      Protocol.spawn_frames(id, @true_exe, [], [
        {:cd_of, beam},
        {:stdin, :null},
        {:credit, 1_048_576}
      ])

    Port.command(port, frame)
    t1 = now()
    {:spawned, ^id, _} = bare_event(port)
    t2 = now()
    {:exit, ^id, {:exit, 0}} = bare_event(port)
    t3 = now()
    {t1 - t0, t2 - t1, t3 - t2, t3 - t0}
  end

  defp bare_event(port) do
    receive do
      {^port, {:data, <<0x20, etf::binary>>}} -> :erlang.binary_to_term(etf)
      {^port, {:data, other}} -> raise "unexpected #{inspect(other)}"
    end
  end

  # CPU time (user + system) of an OS process so far, in microseconds
  # (clock ticks of 10 ms: only sums over many runs mean anything).
  def cpu_us(os_pid) do
    case File.read("/proc/#{os_pid}/stat") do
      {:ok, stat} ->
        fields = stat |> String.split(") ", parts: 2) |> List.last() |> String.split(" ")
        (String.to_integer(Enum.at(fields, 11)) + String.to_integer(Enum.at(fields, 12))) * 10_000

      _ ->
        0
    end
  end

  def cpu_of(pids), do: Enum.sum(Enum.map(pids, &cpu_us/1))

  def median(list), do: Enum.at(Enum.sort(list), div(length(list), 2))

  def p99(list),
    do: Enum.at(Enum.sort(list), min(length(list) - 1, round(0.99 * (length(list) - 1))))

  def us(ns), do: Float.round(ns / 1000, 1)

  def main(n) do
    if pool = System.get_env("PROFILE_POOL") do
      :ok = Application.stop(:lacca)
      Application.put_env(:lacca, :shared_daemons, String.to_integer(pool))
      {:ok, _} = Application.ensure_all_started(:lacca)
    end

    {:ok, _} = Lacca.run("true", [])
    bare = bare_open()
    # PROFILE_OTHER_RESIN=path: the same bare runs through another resin
    # (before/after comparisons of resin alone).
    other = System.get_env("PROFILE_OTHER_RESIN")
    other_port = other && bare_open(other)
    blocks = 10
    per = div(n, blocks)

    beam = String.to_integer(System.pid())
    resins = for d <- Lacca.Daemon.shared(), os_pid = Lacca.Daemon.resin_os_pid(d), do: os_pid
    cpu = :counters.new(4, [])

    timed_cpu = fn i, fun ->
      b0 = cpu_us(beam)
      r0 = cpu_of(resins)
      result = fun.()
      :counters.add(cpu, i, cpu_us(beam) - b0)
      if i == 1, do: :counters.add(cpu, 3, cpu_of(resins) - r0)
      result
    end

    acc =
      Enum.reduce(1..blocks, %{staged: [], run: [], port: [], bare: [], other: []}, fn b, acc ->
        staged = for _ <- 1..per, do: lacca_staged()
        run = timed_cpu.(1, fn -> for _ <- 1..per, do: lacca_run() end)
        port = timed_cpu.(2, fn -> for _ <- 1..per, do: port_run() end)
        bare_s = for i <- 1..per, do: bare_run(bare, b * 1000 + i)
        other_s = if other, do: for(i <- 1..per, do: bare_run(other_port, b * 1000 + i)), else: []

        %{
          staged: acc.staged ++ staged,
          run: acc.run ++ run,
          port: acc.port ++ port,
          bare: acc.bare ++ bare_s,
          other: acc.other ++ other_s
        }
      end)

    col = fn list, i -> Enum.map(list, &elem(&1, i)) end
    IO.puts("load average: #{File.read!("/proc/loadavg") |> String.trim()}")
    IO.puts("n=#{n} per variant, medians (p99) in microseconds")
    IO.puts("| stage | bare port to resin | Lacca.run in stages |")
    IO.puts("|---|---|---|")
    row = fn name, b, l -> IO.puts("| #{name} | #{b} | #{l} |") end
    fmt = fn list -> "#{us(median(list))} (#{us(p99(list))})" end
    row.("BEAM OS pid for cd_of (persistent_term)", "", fmt.(col.(acc.staged, 5)))
    row.("option validation (command!/run!)", "", fmt.(col.(acc.staged, 0)))
    row.("Daemon.pick", "", fmt.(col.(acc.staged, 1)))
    row.("encode + send the spawn", fmt.(col.(acc.bare, 0)), "")
    row.("spawn request -> spawned", fmt.(col.(acc.bare, 1)), fmt.(col.(acc.staged, 2)))
    row.("spawned -> exit", fmt.(col.(acc.bare, 2)), fmt.(col.(acc.staged, 3)))
    row.("total", fmt.(col.(acc.bare, 3)), fmt.(col.(acc.staged, 4)))

    if other do
      IO.puts("")
      IO.puts("bare port to #{other}:")
      row.("spawn request -> spawned", fmt.(col.(acc.other, 1)), "")
      row.("spawned -> exit", fmt.(col.(acc.other, 2)), "")
      row.("total", fmt.(col.(acc.other, 3)), "")
    end

    IO.puts("")
    IO.puts("Lacca.run: #{fmt.(acc.run)}   Port: #{fmt.(acc.port)}")
    IO.puts("Lacca.run / Port: #{Float.round(median(acc.run) / median(acc.port), 2)}")
    per_run = fn i -> round(:counters.get(cpu, i) / length(acc.run)) end

    IO.puts(
      "CPU per run: Lacca.run: BEAM #{per_run.(1)} us + resin #{per_run.(3)} us; " <>
        "Port: BEAM #{per_run.(2)} us (the child's own CPU not counted)"
    )
  end
end

n =
  case System.argv() do
    [n] -> String.to_integer(n)
    _ -> 500
  end

SpawnProfile.main(n)
