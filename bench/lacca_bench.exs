# lacca benchmarks against plain Port / System.cmd, measured in the same run.
#
#   mix run bench/lacca_bench.exs [bench ...]
#
# Prints one JSON object per line on stdout (bench/run.py turns them into the
# table, bench/results.json and docs/bench.png). Benchmarks: spawn, first_call,
# throughput, roundtrip, concurrency, slow_consumer. Timings are in
# microseconds unless a line says otherwise. Not part of the test suite:
# nothing here is asserted.

defmodule Bench.JSON do
  def encode(map) when is_map(map) do
    "{" <>
      Enum.map_join(map, ",", fn {k, v} -> encode(to_string(k)) <> ":" <> encode(v) end) <> "}"
  end

  def encode(list) when is_list(list), do: "[" <> Enum.map_join(list, ",", &encode/1) <> "]"
  def encode(nil), do: "null"
  def encode(b) when is_boolean(b), do: to_string(b)
  def encode(a) when is_atom(a), do: encode(Atom.to_string(a))
  def encode(n) when is_integer(n), do: Integer.to_string(n)
  def encode(f) when is_float(f), do: :erlang.float_to_binary(f, [:compact, decimals: 3])
  def encode(s) when is_binary(s), do: inspect(s)
end

# A Collectable that counts the bytes put into it (for run/3's :into).
defmodule Bench.Counter do
  defstruct []

  defimpl Collectable do
    def into(_) do
      {0,
       fn
         n, {:cont, data} -> n + byte_size(data)
         n, :done -> n
         _, :halt -> :ok
       end}
    end
  end

  # `mix run` consolidated the protocols before this script defined the
  # implementation above: consolidate Collectable again with it.
  def install! do
    case Collectable.__protocol__(:impls) do
      {:consolidated, impls} ->
        {:ok, bin} = Protocol.consolidate(Collectable, Enum.uniq([__MODULE__ | impls]))
        :code.purge(Collectable)
        {:module, Collectable} = :code.load_binary(Collectable, ~c"bench", bin)

      :not_consolidated ->
        :ok
    end

    Collectable.Bench.Counter = Collectable.impl_for(struct(__MODULE__))
  end
end

defmodule Bench do
  @gib 1_073_741_824
  @slow_bytes 200 * 1_048_576

  # One figure, with the 1-minute load average at the time it was taken.
  def emit(map), do: IO.puts(Bench.JSON.encode(Map.put_new(map, :load, load())))

  def load do
    case File.read("/proc/loadavg") do
      {:ok, text} -> text |> String.split() |> hd() |> String.to_float()
      {:error, _} -> nil
    end
  end

  def time_us(fun) do
    {us, _} = :timer.tc(fun)
    us
  end

  def samples(n, fun), do: for(_ <- 1..n, do: time_us(fun))

  # -- spawn ---------------------------------------------------------------

  def spawn do
    true_exe = System.find_executable("true")
    {_, 0} = System.cmd("true", [])
    0 = port_run(true_exe)
    {:ok, _} = Lacca.run("true", [])
    n = 500

    variants = [
      {"Port", fn -> 0 = port_run(true_exe) end},
      {"System.cmd", fn -> {_, 0} = System.cmd("true", []) end},
      {"Lacca.run shared", fn -> {:ok, %{status: {:exit, 0}}} = Lacca.run("true", []) end}
    ]

    # Interleave the variants in blocks so that drift hits all alike.
    results =
      for _ <- 1..10, {name, fun} <- variants, reduce: %{} do
        acc ->
          block = samples(div(n, 10), fun)
          Map.update(acc, name, block, &(&1 ++ block))
      end

    for {name, _} <- variants do
      emit(%{
        bench: "spawn",
        variant: name,
        unit: "us",
        samples: results[name],
        baseline: if(name == "Port", do: nil, else: "Port")
      })
    end

    dedicated =
      samples(50, fn ->
        {:ok, %{status: {:exit, 0}}} = Lacca.run("true", [], daemon: :dedicated)
      end)

    emit(%{
      bench: "spawn",
      variant: "Lacca.run dedicated",
      unit: "us",
      samples: dedicated,
      baseline: "Port"
    })
  end

  # A plain port run to its exit status: what the BEAM itself pays to spawn.
  def port_run(exe) do
    port = Port.open({:spawn_executable, exe}, [:binary, :exit_status])

    receive do
      {^port, {:exit_status, status}} -> status
    end
  end

  # -- first_call ----------------------------------------------------------

  # The first 5 calls in fresh VMs, prestart on and off, against System.cmd
  # (bench/lacca_first_call.exs, which prints its own table on stderr).
  def first_call do
    elixir = System.find_executable("elixir")
    script = Path.join(__DIR__, "lacca_first_call.exs")
    ebin = Application.app_dir(:lacca, "ebin")
    {out, 0} = System.cmd(elixir, ["-pa", ebin, script, "--json"])

    for line <- String.split(out, "\n"), String.starts_with?(line, "{"), do: IO.puts(line)
  end

  # -- throughput ----------------------------------------------------------

  def head_args, do: ["-c", Integer.to_string(@gib), "/dev/zero"]

  def port_count do
    head = System.find_executable("head")

    port =
      Port.open({:spawn_executable, head}, [:binary, :stream, :exit_status, args: head_args()])

    port_loop(port, 0)
  end

  defp port_loop(port, n) do
    receive do
      {^port, {:data, d}} -> port_loop(port, n + byte_size(d))
      {^port, {:exit_status, 0}} -> n
    end
  end

  def messages_count do
    {:ok, pid} = Lacca.start("head", head_args(), output: :messages)
    messages_loop(pid, 0)
  end

  defp messages_loop(pid, n) do
    receive do
      {:lacca, ^pid, {:stdout, d}} -> messages_loop(pid, n + byte_size(d))
      {:lacca, ^pid, {:exit, {:exit, 0}}} -> n
    end
  end

  def into_count do
    {:ok, %{status: {:exit, 0}, stdout: n}} =
      Lacca.run("head", head_args(), into: %Bench.Counter{})

    n
  end

  def stream_count do
    Lacca.stream!("head", head_args()) |> Enum.reduce(0, fn d, n -> n + byte_size(d) end)
  end

  def throughput do
    variants =
      [{"Port", &port_count/0}, {"messages", &messages_count/0}, {"run into", &into_count/0}] ++
        if function_exported?(Lacca, :stream!, 3), do: [{"stream!", &stream_count/0}], else: []

    results =
      for _round <- 1..3, {name, fun} <- variants, reduce: %{} do
        acc ->
          {us, n} = :timer.tc(fun)
          ^n = @gib
          Map.update(acc, name, [us], &[us | &1])
      end

    for {name, _} <- variants do
      emit(%{
        bench: "throughput",
        variant: name,
        unit: "us",
        bytes: @gib,
        samples: Enum.reverse(results[name]),
        baseline: if(name == "Port", do: nil, else: "Port")
      })
    end
  end

  # -- echo round trip ---------------------------------------------------------

  @msg :binary.copy("x", 99) <> "\n"

  def roundtrip do
    n = 5_000
    cat = System.find_executable("cat")
    port = Port.open({:spawn_executable, cat}, [:binary, :stream, :exit_status])
    {:ok, pid} = Lacca.start("cat", [], output: :messages)

    port_fun = fn ->
      Port.command(port, @msg)
      port_recv(port, 0)
    end

    lacca_fun = fn ->
      :ok = Lacca.write_stdin(pid, @msg)
      lacca_recv(pid, 0)
    end

    # Interleaved in blocks, so that drift (other load) hits both alike.
    {port_samples, lacca_samples} =
      Enum.reduce(1..10, {[], []}, fn _, {p, l} ->
        {p ++ samples(div(n, 10), port_fun), l ++ samples(div(n, 10), lacca_fun)}
      end)

    Port.close(port)
    Lacca.stop(pid)

    # The mean too: Port's round trips are bimodal on a machine whose idle
    # CPUs poll (most take ~5 us, the rest 60-80 us), so its median alone
    # says little of what the rest cost.
    emit(%{
      bench: "roundtrip",
      variant: "Port",
      unit: "us",
      samples: port_samples,
      mean_us: mean(port_samples)
    })

    emit(%{
      bench: "roundtrip",
      variant: "messages",
      unit: "us",
      samples: lacca_samples,
      baseline: "Port",
      mean_us: mean(lacca_samples),
      mean_x: mean(lacca_samples) / mean(port_samples)
    })
  end

  defp mean(samples), do: Enum.sum(samples) / length(samples)

  defp port_recv(_port, 100), do: :ok

  defp port_recv(port, got) do
    receive do
      {^port, {:data, d}} -> port_recv(port, got + byte_size(d))
    end
  end

  defp lacca_recv(_pid, 100), do: :ok

  defp lacca_recv(pid, got) do
    receive do
      {:lacca, ^pid, {:stdout, d}} -> lacca_recv(pid, got + byte_size(d))
    end
  end

  # -- concurrency ---------------------------------------------------------

  # 1,000 `sleep`s started one after another (each start returns once the
  # OS process runs), Port and Lacca.start interleaved over 3 rounds; then
  # 10,000 held at once. The serial rows also say how busy the machine was
  # and where its CPU went per start (medians of the rounds): all CPUs
  # (busy_percent of them, cpu_us in all), the BEAM, the helper
  # (erl_child_setup for Port, the resins for lacca); for lacca, floor_x is
  # its CPU spread over every core against Port's wall time: the least its
  # ratio could be with every core busy. Each figure is the median of its
  # own over the rounds (they may come from different rounds). Each phase
  # starts once the previous one's processes are gone and the kernel had a
  # moment for their teardown, which would otherwise count against it.
  def concurrency do
    sleep = System.find_executable("sleep")
    {:ok, _} = Lacca.run("true", [])
    beam = System.pid()
    resins = resin_pids()
    child_setup = child_setup_pids()
    n = 1_000

    rounds =
      for _ <- 1..3 do
        settle()

        port =
          cpu_measure(beam, child_setup, fn ->
            for _ <- 1..n do
              port = Port.open({:spawn_executable, sleep}, [:binary, args: ["1000"]])
              {:os_pid, os_pid} = Port.info(port, :os_pid)
              {port, os_pid}
            end
          end)

        for {port, os_pid} <- port.result do
          Port.close(port)
          System.cmd("kill", ["-KILL", Integer.to_string(os_pid)])
        end

        Enum.each(port.result, fn {_, os_pid} -> await_gone(os_pid) end)
        settle()
        lacca = cpu_measure(beam, resins, fn -> start_sleeps(n) end)
        stop_all(lacca.result)
        {port, lacca}
      end

    {ports, laccas} = Enum.unzip(rounds)
    port_wall = median(Enum.map(ports, & &1.wall))

    emit(
      Map.merge(
        %{
          bench: "concurrency_1000",
          variant: "Port",
          unit: "us",
          samples: Enum.map(ports, & &1.wall)
        },
        cpu_figures(ports, n)
      )
    )

    lacca_cpu = cpu_figures(laccas, n)

    emit(
      Map.merge(
        %{
          bench: "concurrency_1000",
          variant: "Lacca.start",
          unit: "us",
          samples: Enum.map(laccas, & &1.wall),
          baseline: "Port",
          floor_x: lacca_cpu.cpu_us * n / cores() / port_wall
        },
        lacca_cpu
      )
    )

    n = 10_000
    {us, pids} = :timer.tc(fn -> start_sleeps(n) end)
    resins = resin_pids()
    rss = Enum.sum(Enum.map(resins, &rss_kib/1))
    cpu_before = Enum.sum(Enum.map(resins, &cpu_ticks/1))
    t0 = System.monotonic_time(:millisecond)
    Process.sleep(2_000)
    cpu_after = Enum.sum(Enum.map(resins, &cpu_ticks/1))
    wall = System.monotonic_time(:millisecond) - t0
    idle_cpu = (cpu_after - cpu_before) * 10 / wall * 100
    os_pids = Enum.map(pids, &Lacca.os_pid/1)
    {stop_us, _} = :timer.tc(fn -> stop_all(pids) end)
    left = Enum.count(os_pids, &File.exists?("/proc/#{&1}"))

    emit(%{
      bench: "concurrency_10000",
      variant: "Lacca.start",
      unit: "us",
      samples: [us],
      resin_rss_mib: rss / 1024,
      idle_cpu_percent: idle_cpu,
      stop_us: stop_us,
      left_after_stop: left
    })
  end

  # `fun` timed, with the CPU (us) of the machine (all CPUs), of the BEAM
  # and of the helper processes used meanwhile.
  defp cpu_measure(beam, helpers, fun) do
    {m0, b0, h0} = cpu_snapshot(beam, helpers)
    {wall, result} = :timer.tc(fun)
    {m1, b1, h1} = cpu_snapshot(beam, helpers)
    tick = div(1_000_000, 100)

    %{
      wall: wall,
      machine: (m1 - m0) * tick,
      beam: (b1 - b0) * tick,
      helper: (h1 - h0) * tick,
      result: result
    }
  end

  defp cpu_snapshot(beam, helpers) do
    {machine_ticks(), cpu_ticks(beam), helpers |> Enum.map(&cpu_ticks/1) |> Enum.sum()}
  end

  # Per-start medians of cpu_measure/3's rounds.
  defp cpu_figures(rounds, n) do
    per = fn key -> median(Enum.map(rounds, &(Map.fetch!(&1, key) / n))) end
    busy = median(Enum.map(rounds, &(100 * &1.machine / (&1.wall * cores()))))
    %{busy_percent: busy, cpu_us: per.(:machine), beam_us: per.(:beam), helper_us: per.(:helper)}
  end

  # The CPUs /proc/stat counts (not the schedulers: +S may differ).
  defp cores do
    case :erlang.system_info(:logical_processors_available) do
      n when is_integer(n) -> n
      :unknown -> :erlang.system_info(:logical_processors)
    end
  end

  # A killed Port's program: gone once its /proc entry is (erl_child_setup
  # reaps it).
  defp await_gone(os_pid) do
    if File.exists?("/proc/#{os_pid}") do
      Process.sleep(1)
      await_gone(os_pid)
    end
  end

  # Time for the kernel's deferred teardown of the last phase's processes
  # (exits, cgroups) before the next phase's CPU is counted.
  defp settle, do: Process.sleep(500)

  # Busy ticks of all CPUs from /proc/stat (user nice system irq softirq
  # steal; not idle or iowait).
  defp machine_ticks do
    ["cpu" | fields] =
      "/proc/stat" |> File.read!() |> String.split("\n") |> hd() |> String.split()

    [user, nice, system, _idle, _iowait, irq, softirq, steal | _] =
      Enum.map(fields, &String.to_integer/1)

    user + nice + system + irq + softirq + steal
  end

  defp median(values) do
    sorted = Enum.sort(values)
    Enum.at(sorted, div(length(sorted), 2))
  end

  # The erl_child_setup of this BEAM (it forks every Port's program).
  defp child_setup_pids do
    me = String.to_integer(System.pid())

    for dir <- Path.wildcard("/proc/[0-9]*"),
        pid = String.to_integer(Path.basename(dir)),
        ppid(pid) == me,
        match?({:ok, "erl_child_setup" <> _}, File.read(dir <> "/comm")),
        do: pid
  end

  defp start_sleeps(n) do
    for _ <- 1..n do
      {:ok, pid} = Lacca.start("sleep", ["1000"], stdin: :null)
      pid
    end
  end

  defp stop_all(pids) do
    pids
    |> Task.async_stream(&Lacca.kill/1, max_concurrency: 64, timeout: :infinity)
    |> Stream.run()

    Enum.each(pids, &Lacca.await(&1, 10_000))
  end

  # resin processes started by this BEAM (ports run under erl_child_setup, so
  # look for the BEAM among the ancestors).
  def resin_pids do
    me = String.to_integer(System.pid())

    for dir <- Path.wildcard("/proc/[0-9]*"),
        pid = String.to_integer(Path.basename(dir)),
        resin?(pid),
        descendant?(pid, me, 8),
        do: pid
  end

  defp resin?(pid) do
    case File.read("/proc/#{pid}/cmdline") do
      {:ok, cmdline} -> String.contains?(cmdline, "resin")
      _ -> false
    end
  end

  defp descendant?(_pid, _ancestor, 0), do: false

  defp descendant?(pid, ancestor, depth) do
    case ppid(pid) do
      ^ancestor -> true
      p when p in [nil, 0, 1] -> false
      p -> descendant?(p, ancestor, depth - 1)
    end
  end

  defp ppid(pid) do
    case stat_fields(pid) do
      nil -> nil
      f -> String.to_integer(Enum.at(f, 1))
    end
  end

  # The fields of /proc/<pid>/stat after the command name (state first), or
  # nil when the process is gone.
  defp stat_fields(pid) do
    case File.read("/proc/#{pid}/stat") do
      {:ok, s} -> s |> String.split(") ", parts: 2) |> List.last() |> String.split(" ")
      _ -> nil
    end
  end

  defp rss_kib(pid) do
    case File.read("/proc/#{pid}/status") do
      {:ok, s} ->
        [_, kib] = Regex.run(~r/VmRSS:\s+(\d+)/, s)
        String.to_integer(kib)

      _ ->
        0
    end
  end

  defp cpu_ticks(pid) do
    case stat_fields(pid) do
      nil -> 0
      f -> String.to_integer(Enum.at(f, 11)) + String.to_integer(Enum.at(f, 12))
    end
  end

  # -- slow consumer -----------------------------------------------------------

  # Peak of BEAM memory + resin RSS while a consumer sleeps and a child writes
  # 200 MiB, as growth over the level before the child started.
  def slow_consumer do
    # Start the shared resins first, so that their start-up memory is not
    # counted as growth (the pool hands out its daemons round robin).
    for _ <- 1..8, do: {:ok, _} = Lacca.run("true", [])
    args = ["-c", Integer.to_string(@slow_bytes), "/dev/zero"]
    head = System.find_executable("head")

    port_peak =
      measure_peak(fn ->
        port = Port.open({:spawn_executable, head}, [:binary, :stream, :exit_status, args: args])
        Process.sleep(5_000)
        port_loop(port, 0)
      end)

    emit(%{bench: "slow_consumer", variant: "Port", unit: "MiB", samples: [port_peak]})

    if function_exported?(Lacca, :stream!, 3) do
      peak =
        measure_peak(fn ->
          Lacca.stream!("head", args)
          |> Enum.reduce(0, fn
            d, 0 ->
              Process.sleep(5_000)
              byte_size(d)

            d, n ->
              n + byte_size(d)
          end)
        end)

      emit(%{
        bench: "slow_consumer",
        variant: "stream!",
        unit: "MiB",
        samples: [peak],
        baseline: "Port"
      })
    end

    # A process server whose owner does not read for 5 s: :messages with the
    # default active mode, :messages with active: true (unbounded, for
    # comparison), and :buffer.
    for {variant, opts} <- [
          {"messages", [output: :messages]},
          {"messages active: true", [output: :messages, active: true]},
          {"buffer", []}
        ] do
      peak =
        measure_peak(fn ->
          {:ok, pid} = Lacca.start("head", args, opts)
          Process.sleep(5_000)
          if opts == [], do: read_all(pid, 0), else: messages_loop(pid, 0)
        end)

      emit(%{
        bench: "slow_consumer",
        variant: variant,
        unit: "MiB",
        samples: [peak],
        baseline: "Port"
      })
    end
  end

  # :buffer mode to the end: "" once the process exited and all was read.
  defp read_all(pid, n) do
    case Lacca.read_stdout(pid, :infinity) do
      {:ok, ""} -> n
      {:ok, data} -> read_all(pid, n + byte_size(data))
    end
  end

  defp measure_peak(fun) do
    :erlang.garbage_collect()
    base = total_bytes()
    parent = self()
    sampler = spawn_link(fn -> sample_loop(parent, base, 0) end)
    @slow_bytes = fun.()
    send(sampler, :stop)

    receive do
      {:peak, peak} -> peak / 1_048_576
    end
  end

  defp sample_loop(parent, base, peak) do
    receive do
      :stop -> send(parent, {:peak, max(peak, total_bytes() - base)})
    after
      20 -> sample_loop(parent, base, max(peak, total_bytes() - base))
    end
  end

  defp total_bytes do
    :erlang.memory(:total) + Enum.sum(Enum.map(resin_pids(), &rss_kib/1)) * 1024
  end
end

Code.ensure_loaded!(Lacca)
Bench.Counter.install!()
all = ~w(spawn first_call throughput roundtrip concurrency slow_consumer)
selected = if System.argv() == [], do: all, else: System.argv()

for name <- selected do
  unless name in all,
    do: raise(ArgumentError, "unknown benchmark #{name}; known: #{inspect(all)}")

  apply(Bench, String.to_atom(name), [])
end
