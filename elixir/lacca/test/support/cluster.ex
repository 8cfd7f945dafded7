defmodule Lacca.TestCluster do
  @moduledoc false
  # Real nodes for the `node:` tests (tag :cluster), with OTP's :peer: each
  # peer is a BEAM of its own on this machine, with lacca's code paths (the
  # test build, the support modules included) and the same resin, running
  # :lacca. The test node is made distributed on first use (epmd started
  # if needed): tests that need no peer do not pay for it.

  # A peer BEAM starts in ~0.5 s alone, several seconds on a loaded 2-core
  # machine.
  @boot_timeout 60_000

  @doc "Makes this node distributed (a short name), starting epmd when needed."
  @spec distribute!() :: node()
  def distribute! do
    unless Node.alive?() do
      # `epmd -daemon` returns at once whether or not one runs already.
      {_, 0} = System.cmd("epmd", ["-daemon"], stderr_to_stdout: true)
      name = :"lacca_test_#{System.unique_integer([:positive])}"

      case Node.start(name, :shortnames) do
        {:ok, _} -> :ok
        {:error, {:already_started, _}} -> :ok
      end
    end

    node()
  end

  @doc """
  Starts a peer node running :lacca; stopped when the test ends (unless
  the test killed it). Returns `{peer, node}` (`peer`: the :peer control
  process).
  """
  @spec start_peer!(keyword()) :: {pid(), node()}
  def start_peer!(opts \\ []) do
    distribute!()
    {:ok, resin} = Lacca.Resin.find()

    name = :peer.random_name(~c"lacca_peer")

    # control: :standard_io keeps :peer's control off the distribution
    # connection, so that the peer lives on when it is disconnected (a
    # netsplit); by default a peer halts when it loses its origin.
    control =
      case Keyword.get(opts, :control, :distribution) do
        :distribution -> %{}
        :standard_io -> %{connection: :standard_io}
      end

    {:ok, peer, node} =
      :peer.start(
        %{
          name: name,
          # -connect_all false: each peer connects to this node only, so that
          # killing one is seen by this node alone (no :global partition talk).
          args: [
            ~c"-setcookie",
            Atom.to_charlist(Node.get_cookie()),
            ~c"-connect_all",
            ~c"false"
          ],
          # LACCA_TEST_NODE: OS processes tell by it which node started them.
          env: [{~c"LACCA_RESIN", String.to_charlist(resin)}, {~c"LACCA_TEST_NODE", name}],
          wait_boot: @boot_timeout
        }
        |> Map.merge(control)
      )

    ExUnit.Callbacks.on_exit(fn -> stop_peer(peer) end)
    true = Node.connect(node)

    :ok = :erpc.call(node, :code, :add_paths, [:code.get_path()])

    if Keyword.get(opts, :lacca, true) do
      :ok = :erpc.call(node, Application, :put_env, [:lacca, :resin, resin])
      {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [:lacca])
      await_lacca(node)
    end

    {peer, node}
  end

  @doc "Waits until `node` is in Lacca.nodes/0 (its :pg member is seen here)."
  @spec await_lacca(node()) :: :ok
  def await_lacca(node) do
    {ref, members} = :pg.monitor(Lacca.Cluster.scope(), Lacca.Cluster.group())

    try do
      unless Enum.any?(members, &(node(&1) == node)), do: await_join(ref, node)
      :ok
    after
      :pg.demonitor(Lacca.Cluster.scope(), ref)
    end
  end

  defp await_join(ref, node) do
    receive do
      {^ref, :join, _group, pids} ->
        unless Enum.any?(pids, &(node(&1) == node)), do: await_join(ref, node)
    after
      @boot_timeout -> raise "lacca on #{node} did not join the :pg group"
    end
  end

  @doc "Stops a peer (nothing if it is gone already)."
  @spec stop_peer(pid()) :: :ok
  def stop_peer(peer) do
    :peer.stop(peer)
  catch
    :exit, _ -> :ok
  end

  @doc """
  Kills `node` with SIGKILL (its BEAM's OS process) and returns once this
  node saw it go (its :nodedown).
  """
  @spec kill_node!(node()) :: :ok
  def kill_node!(node) do
    os_pid = :erpc.call(node, :os, :getpid, [])
    true = Node.monitor(node, true)
    {_, 0} = System.cmd("kill", ["-KILL", to_string(os_pid)])

    receive do
      {:nodedown, ^node} -> :ok
    after
      @boot_timeout -> raise "#{node} did not go down"
    end
  end

  @doc """
  Runs on a peer (via :erlang.spawn/4): starts `cmd` with Lacca.start/3 and
  `opts` (which may name another node), reports `{:owner, self(), result}`
  to `parent`, and stays alive as the owner until told `:stop`. Forwards
  the lacca messages it gets to `parent`.
  """
  @spec owner(pid(), String.t(), [String.t()], keyword()) :: :ok
  # `owner: :self` in `opts` becomes `owner: self()`, `link: true` makes it
  # Lacca.start_link/3.
  def owner(parent, cmd, args, opts) do
    {link?, opts} = Keyword.pop(opts, :link, false)
    opts = if opts[:owner] == :self, do: Keyword.put(opts, :owner, self()), else: opts
    start = if link?, do: &Lacca.start_link/3, else: &Lacca.start/3
    send(parent, {:owner, self(), start.(cmd, args, opts)})
    owner_loop(parent)
  end

  @doc """
  Runs on a peer: `Lacca.run/3` (`:run`) or `Lacca.stream!/3` (`:stream`)
  of `cmd` with `opts`, each output chunk sent to `parent` as
  `{:collected, data}`.
  """
  @spec consumer(pid(), :run | :stream, String.t(), [String.t()], keyword()) :: term()
  def consumer(parent, :run, cmd, args, opts),
    do: Lacca.run(cmd, args, [into: %Lacca.TestCollector{pid: parent}] ++ opts)

  def consumer(parent, :stream, cmd, args, opts),
    do: Lacca.stream!(cmd, args, opts) |> Enum.each(&send(parent, {:collected, &1}))

  @doc """
  Run by an `:erpc` request (remote_flow_test): tells `parent` `{:held_answer,
  self()}`, then answers as `process_info(owner, :message_queue_len)` would
  for an owner far behind, once sent `:answer`.
  """
  @spec held_answer(pid()) :: {:message_queue_len, pos_integer()}
  def held_answer(parent) do
    send(parent, {:held_answer, self()})

    receive do
      :answer -> {:message_queue_len, 1_000_000}
    after
      60_000 -> {:message_queue_len, 1_000_000}
    end
  end

  @doc """
  Runs on a peer: starts `cmd` with Lacca.start/3 and `opts` (which may
  name another node), reports `{:owner, self(), result}` to `parent`, and
  reads none of the output until told. Meanwhile it answers `{:report,
  from, ref}` with `{ref, queue_len, queued_bytes, binary_memory}` (its
  message queue, the bytes of the output chunks in it, this node's binary
  memory), found without taking anything from the queue. Told `:read`, it
  reads the output to the final message and sends `parent` `{:read, bytes,
  md5, final}`.
  """
  @spec hoarder(pid(), String.t(), [String.t()], keyword()) :: :ok
  def hoarder(parent, cmd, args, opts) do
    {:ok, pid} = result = Lacca.start(cmd, args, opts)
    send(parent, {:owner, self(), result})
    hoard(parent, pid)
  end

  defp hoard(parent, pid) do
    receive do
      {:report, from, ref} ->
        {:messages, messages} = Process.info(self(), :messages)

        bytes =
          for {:lacca, ^pid, {_stream, data}} when is_binary(data) <- messages,
              do: byte_size(data)

        send(from, {ref, length(messages), Enum.sum(bytes), :erlang.memory(:binary)})
        hoard(parent, pid)

      :read ->
        send(parent, read_all(pid, 0, :erlang.md5_init()))
        :ok
    end
  end

  defp read_all(pid, n, hash) do
    receive do
      {:lacca, ^pid, {:stdout, data}} ->
        read_all(pid, n + byte_size(data), :erlang.md5_update(hash, data))

      {:lacca, ^pid, {:stderr, _}} = msg ->
        {:read, n, :erlang.md5_final(hash), {:unexpected, msg}}

      {:lacca, ^pid, final} when final != :passive ->
        {:read, n, :erlang.md5_final(hash), final}
    end
  end

  defp owner_loop(parent) do
    receive do
      :stop -> :ok
      {:lacca, _, _} = msg -> send(parent, {:forwarded, msg}) && owner_loop(parent)
    end
  end
end
