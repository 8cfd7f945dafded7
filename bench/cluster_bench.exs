# lacca across nodes (issue 13): the same work on this node and via a peer
# node on the same machine (OTP's :peer), measured in one run, interleaved.
#
#   mix run bench/cluster_bench.exs [cluster_spawn] [cluster_throughput]
#
# Prints one JSON object per line on stdout, in bench/lacca_bench.exs's
# format (bench/run.py turns them into the table). The remote variants'
# baseline is the local one: the ratio is what crossing the distribution
# connection costs. Both nodes share the machine's 2 cores, so the remote
# variants pay for a second BEAM scheduling on them too. Not part of the
# test suite: nothing here is asserted.

defmodule ClusterBench.JSON do
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

defmodule ClusterBench do
  @bytes 512 * 1_048_576

  def emit(map), do: IO.puts(ClusterBench.JSON.encode(map))

  # -- the peer --------------------------------------------------------------

  def peer! do
    unless Node.alive?() do
      {_, 0} = System.cmd("epmd", ["-daemon"], stderr_to_stdout: true)
      {:ok, _} = Node.start(:"lacca_bench_#{System.unique_integer([:positive])}", :shortnames)
    end

    {:ok, resin} = Lacca.Resin.find()

    {:ok, peer, node} =
      :peer.start(%{
        name: :peer.random_name(~c"lacca_bench_peer"),
        args: [~c"-setcookie", Atom.to_charlist(Node.get_cookie())],
        env: [{~c"LACCA_RESIN", String.to_charlist(resin)}],
        wait_boot: 60_000
      })

    :ok = :erpc.call(node, :code, :add_paths, [:code.get_path()])
    :ok = :erpc.call(node, Application, :put_env, [:lacca, :resin, resin])
    {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [:lacca])
    # Its resins are up (prestarted) once each answers.
    for d <- :erpc.call(node, Lacca.Daemon, :shared, []), do: :erpc.call(node, Lacca.Daemon, :resin_os_pid, [d])
    {peer, node}
  end

  # -- spawn latency ---------------------------------------------------------

  def time_us(fun) do
    {us, _} = :timer.tc(fun)
    us
  end

  def cluster_spawn(node) do
    run = fn opts -> {:ok, %{status: {:exit, 0}}} = Lacca.run("true", [], opts) end
    # Warm both paths (module loading, connections).
    for _ <- 1..20, do: run.([]) && run.(node: node)
    n = 300

    {local, remote} =
      Enum.reduce(1..10, {[], []}, fn _, {l, r} ->
        {l ++ for(_ <- 1..div(n, 10), do: time_us(fn -> run.([]) end)),
         r ++ for(_ <- 1..div(n, 10), do: time_us(fn -> run.(node: node) end))}
      end)

    emit(%{bench: "cluster_spawn", variant: "Lacca.run local", unit: "us", samples: local})

    emit(%{
      bench: "cluster_spawn",
      variant: "Lacca.run node: peer",
      unit: "us",
      samples: remote,
      baseline: "Lacca.run local"
    })
  end

  # -- throughput ------------------------------------------------------------

  def count(opts) do
    Lacca.stream!("head", ["-c", Integer.to_string(@bytes), "/dev/zero"], opts)
    |> Enum.reduce(0, fn d, n -> n + byte_size(d) end)
  end

  def cluster_throughput(node) do
    variants = [{"stream! local", []}, {"stream! node: peer", [node: node]}]

    results =
      for _round <- 1..3, {name, opts} <- variants, reduce: %{} do
        acc ->
          {us, n} = :timer.tc(fn -> count(opts) end)
          ^n = @bytes
          Map.update(acc, name, [us], &[us | &1])
      end

    for {name, _} <- variants do
      emit(%{
        bench: "cluster_throughput",
        variant: name,
        unit: "us",
        bytes: @bytes,
        samples: Enum.reverse(results[name]),
        baseline: if(name == "stream! local", do: nil, else: "stream! local")
      })
    end
  end
end

benches = ~w(cluster_spawn cluster_throughput)
names = if System.argv() == [], do: benches, else: System.argv()
{peer, node} = ClusterBench.peer!()
IO.puts(:stderr, "loadavg: #{File.read!("/proc/loadavg") |> String.trim()}")

for name <- names, name in benches do
  apply(ClusterBench, String.to_atom(name), [node])
end

:peer.stop(peer)
