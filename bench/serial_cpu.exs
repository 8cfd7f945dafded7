# Where the CPU of a serial start goes, and how busy the machine is: 1,000
# held `sleep`s started one after another with Port and with Lacca.start,
# interleaved over 3 rounds (issue 12, goal 4). Per start: wall time, machine
# CPU (/proc/stat, all CPUs, idle and iowait excluded), the BEAM's own CPU,
# the helper's (erl_child_setup for Port, the resins for lacca) and the rest
# (the children, the kernel's threads). "busy" is machine CPU / (wall x CPUs).
#
#   MIX_ENV=prod mix run bench/serial_cpu.exs          # N=1000 ROUNDS=3
#   RESIN_CGROUPS=0 MIX_ENV=prod mix run bench/serial_cpu.exs
#
# A serial start cannot finish faster than its CPU spread over every core:
# wall >= machine CPU / cores. That floor, against Port's wall, is printed
# as "floor" for each lacca round.
defmodule SerialCpu do
  @tick_us div(1_000_000, 100)

  def main do
    n = env_int("N", 1_000)
    rounds = env_int("ROUNDS", 3)
    cores = System.schedulers_online()
    sleep = System.find_executable("sleep")
    {:ok, _} = Lacca.run("true", [])
    beam = System.pid()
    resins = pids_where(fn dir -> cmdline(dir) =~ "resin" end)
    setup = pids_where(fn dir -> read(dir <> "/comm") =~ "erl_child_setup" end)

    IO.puts("n=#{n} cores=#{cores} resins=#{length(resins)} load #{load()}")

    for round <- 1..rounds do
      port = measure(beam, setup, fn -> start_ports(sleep, n) end)
      stop_ports(port.result)
      report(round, "Port", "erl_child_setup", port, n, cores, nil)

      lacca = measure(beam, resins, fn -> start_laccas(n) end)
      stop_laccas(lacca.result)
      report(round, "Lacca.start", "resin", lacca, n, cores, port.wall)
    end
  end

  defp start_ports(sleep, n) do
    for _ <- 1..n do
      port = Port.open({:spawn_executable, sleep}, [:binary, args: ["1000"]])
      {:os_pid, os_pid} = Port.info(port, :os_pid)
      {port, os_pid}
    end
  end

  defp stop_ports(ports) do
    for {port, os_pid} <- ports do
      Port.close(port)
      System.cmd("kill", ["-KILL", Integer.to_string(os_pid)])
    end
  end

  defp start_laccas(n) do
    for _ <- 1..n do
      {:ok, pid} = Lacca.start("sleep", ["1000"], stdin: :null)
      pid
    end
  end

  defp stop_laccas(pids) do
    pids |> Task.async_stream(&Lacca.kill/1, max_concurrency: 64) |> Stream.run()
    Enum.each(pids, &Lacca.await(&1, 10_000))
  end

  defp measure(beam, helpers, fun) do
    {m0, b0, h0} = snapshot(beam, helpers)
    {wall, result} = :timer.tc(fun)
    {m1, b1, h1} = snapshot(beam, helpers)

    %{
      wall: wall,
      machine: (m1 - m0) * @tick_us,
      beam: (b1 - b0) * @tick_us,
      helper: (h1 - h0) * @tick_us,
      result: result
    }
  end

  defp report(round, name, helper, m, n, cores, port_wall) do
    per = fn us -> div(us, n) end
    busy = round(100 * m.machine / (m.wall * cores))

    floor =
      if port_wall,
        do: " floor #{Float.round(m.machine / cores / port_wall, 2)}x Port",
        else: ""

    IO.puts(
      "#{round} #{String.pad_trailing(name, 11)} wall #{per.(m.wall)} us, busy #{busy} % | " <>
        "CPU per start: machine #{per.(m.machine)}, BEAM #{per.(m.beam)}, " <>
        "#{helper} #{per.(m.helper)}, rest #{per.(m.machine - m.beam - m.helper)} us" <>
        "#{floor} | load #{load()}"
    )
  end

  defp snapshot(beam, helpers) do
    {machine_ticks(), ticks(beam), helpers |> Enum.map(&ticks/1) |> Enum.sum()}
  end

  # Busy ticks of all CPUs (user nice system irq softirq steal; not idle, iowait).
  defp machine_ticks do
    ["cpu" | fields] =
      "/proc/stat" |> File.read!() |> String.split("\n") |> hd() |> String.split()

    [user, nice, system, _idle, _iowait, irq, softirq, steal | _] =
      Enum.map(fields, &String.to_integer/1)

    user + nice + system + irq + softirq + steal
  end

  # utime + stime of one process (all its threads), 0 once it is gone.
  defp ticks(pid) do
    case File.read("/proc/#{pid}/stat") do
      {:ok, stat} ->
        fields = stat |> String.split(") ", parts: 2) |> List.last() |> String.split(" ")
        String.to_integer(Enum.at(fields, 11)) + String.to_integer(Enum.at(fields, 12))

      {:error, _} ->
        0
    end
  end

  defp pids_where(pred) do
    for dir <- Path.wildcard("/proc/[0-9]*"), pred.(dir), do: Path.basename(dir)
  end

  defp cmdline(dir), do: read(dir <> "/cmdline")

  defp read(path) do
    case File.read(path) do
      {:ok, text} -> text
      {:error, _} -> ""
    end
  end

  defp load, do: "/proc/loadavg" |> File.read!() |> String.split() |> hd()

  defp env_int(name, default) do
    case System.get_env(name) do
      nil -> default
      value -> String.to_integer(value)
    end
  end
end

SerialCpu.main()
