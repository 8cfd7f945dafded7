# Per-stage cost of one Lacca.start on the BEAM side (µs/op, n starts per stage).
# MIX_ENV=prod mix run bench/start_stages.exs
n = 200

t = fn f ->
  {us, _} = :timer.tc(fn -> for _ <- 1..n, do: f.() end)
  Float.round(us / n, 1)
end

for round <- 1..2 do
  cmd = t.(fn -> Lacca.Options.command!("sleep", ["100"]) end)
  opts = t.(fn -> Lacca.Options.start!([]) end)
  ens = t.(fn -> Lacca.Daemon.ensure_started!() end)
  cwd = t.(fn -> File.cwd!() end)
  pick = t.(fn -> Lacca.Daemon.pick() end)
  spec = Lacca.Options.start!([])
  {exec, args} = Lacca.Options.command!("sleep", ["100"])
  # raw daemon spawn (resin round trip), no Lacca.Process server
  raw =
    t.(fn ->
      {:ok, _, _, _} =
        Lacca.Daemon.spawn(Lacca.Daemon.pick(), exec, args, spec.spawn, spec.max_buffer, self())
    end)

  {us, pids} = :timer.tc(fn -> for _ <- 1..n, do: elem(Lacca.start("sleep", ["100"]), 1) end)
  start = Float.round(us / n, 1)

  {us, ports} =
    :timer.tc(fn ->
      for _ <- 1..n,
          do:
            (
              p = Port.open({:spawn_executable, "/bin/sleep"}, [:binary, args: ["100"]])
              {p, Port.info(p, :os_pid)}
            )
    end)

  port = Float.round(us / n, 1)

  IO.puts(
    "round #{round}: command! #{cmd}  Options.start! #{opts}  ensure_started! #{ens}  File.cwd! #{cwd}  pick #{pick}  Daemon.spawn #{raw}  Lacca.start #{start}  Port.open+os_pid #{port} (µs/op)  load #{File.read!("/proc/loadavg") |> String.trim()}"
  )

  Enum.each(pids, &Lacca.stop/1)
  # kill exactly the OS pids this script started through Port.open
  Enum.each(ports, fn {p, {:os_pid, os}} ->
    _ = p
    System.cmd("kill", ["#{os}"])
  end)
end
