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

  # The floor of any remote stream: the same bytes in 65,530-byte messages
  # from a process on the peer, with the same credit (Lacca.Remote's window
  # of chunks, half of it granted back at a time), and no OS process, no
  # resin, no lacca. Compiled on the peer, which has no bench code.
  @sender """
  defmodule ClusterBench.Sender do
    def run(to, bytes, window) do
      chunk = :binary.copy(<<0>>, 65_530)
      loop(to, bytes, window, chunk)
    end

    defp loop(to, 0, _credit, _chunk), do: send(to, {:bench, self(), :done})

    defp loop(to, left, 0, chunk) do
      receive do
        {:credit, n} -> loop(to, left, n, chunk)
      end
    end

    defp loop(to, left, credit, chunk) do
      size = min(left, byte_size(chunk))
      send(to, {:bench, self(), binary_part(chunk, 0, size)})
      loop(to, left - size, credit - 1, chunk)
    end
  end
  """

  def dist_count(node) do
    window = Lacca.Remote.window()
    pid = Node.spawn(node, ClusterBench.Sender, :run, [self(), @bytes, window])
    dist_loop(pid, 0, 0, div(window, 2))
  end

  defp dist_loop(pid, n, consumed, half) do
    receive do
      {:bench, ^pid, :done} ->
        n

      {:bench, ^pid, data} ->
        consumed =
          if consumed + 1 >= half do
            send(pid, {:credit, consumed + 1})
            0
          else
            consumed + 1
          end

        dist_loop(pid, n + byte_size(data), consumed, half)
    end
  end

  def cluster_throughput(node) do
    [_ | _] = :erpc.call(node, Code, :compile_string, [@sender])

    variants = [
      {"stream! local", fn -> count([]) end},
      {"stream! node: peer", fn -> count(node: node) end},
      {"distribution alone", fn -> dist_count(node) end}
    ]

    results =
      for _round <- 1..3, {name, fun} <- variants, reduce: %{} do
        acc ->
          {us, n} = :timer.tc(fun)
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
