defmodule Lacca.ClusterTest do
  # Real nodes (OTP's :peer) on this machine: see Lacca.TestCluster.
  use ExUnit.Case, async: false

  import Lacca.OSHelpers
  import Lacca.TestCluster

  @moduletag :cluster
  @moduletag timeout: 180_000

  setup_all do
    {_peer, node} = start_peer!()
    %{b: node}
  end

  # The short name of the node whose resin started an OS process.
  defp short(node), do: node |> Atom.to_string() |> String.split("@") |> hd()

  defp where(opts) do
    {:ok, %Lacca.Result{stdout: out, status: {:exit, 0}}} =
      Lacca.run("sh", ["-c", "printf %s \"$LACCA_TEST_NODE\""], opts)

    out
  end

  defp tmp_file(data) do
    path = Path.join(System.tmp_dir!(), "lacca-cluster-#{System.unique_integer([:positive])}")
    File.write!(path, data)
    on_exit(fn -> File.rm(path) end)
    path
  end

  # No process server is left on `node` (servers of earlier tests end on
  # their own, right after their final message or read).
  defp none_left?(node) do
    wait_until(fn ->
      :erpc.call(node, DynamicSupervisor, :count_children, [Lacca.ProcessSupervisor]).active == 0
    end)
  end

  describe "node: and the entry points" do
    test "run/3 and shell/2 run on the node; node: node() is this node", %{b: b} do
      assert where(node: b) == short(b)
      assert where(node: node()) == ""
      assert where([]) == ""

      assert {:ok, %Lacca.Result{stdout: "x2\n"}} =
               Lacca.shell("echo $((6 * 7)) | tr 4 x", node: b)

      assert {:ok, %Lacca.Result{stdout: "out\n", stderr: "err\n", status: {:exit, 3}}} =
               Lacca.run("sh", ["-c", "echo out; echo err >&2; exit 3"], node: b)

      assert {:error, :enoent} = Lacca.run("/nonexistent/program", [], node: b)
    end

    test "run/3: :input goes to the remote process, :into collects on this node", %{b: b} do
      input = :crypto.strong_rand_bytes(300_000)
      assert {:ok, %Lacca.Result{stdout: ^input}} = Lacca.run("cat", [], input: input, node: b)

      assert {:ok, %Lacca.Result{stdout: %Lacca.TestCollector{}}} =
               Lacca.run("printf", ["abc"], into: %Lacca.TestCollector{pid: self()}, node: b)

      # The collector's function ran here: it could send to self() only here.
      assert_received {:collected, "abc"}

      assert {:ok, %Lacca.Result{stdout: list}} =
               Lacca.run("printf", ["a\nb\n"], into: [], node: b)

      assert IO.iodata_to_binary(list) == "a\nb\n"
    end

    test "run/3 :timeout stops the remote process", %{b: b} do
      assert {:ok, %Lacca.Result{stdout: "started\n", status: :timeout}} =
               Lacca.run("sh", ["-c", "echo started; exec sleep 1000"], timeout: 300, node: b)

      assert none_left?(b)
    end

    test "a run/3 whose :into raises, or whose caller dies, leaves nothing running", %{b: b} do
      script = ["-c", "echo $$; exec sleep 1000"]

      assert_raise ArgumentError, fn ->
        Lacca.run("sh", script, node: b, into: %Lacca.TestCollector{pid: :nobody_registered})
      end

      assert none_left?(b)
      parent = self()

      {caller, ref} =
        spawn_monitor(fn ->
          Lacca.run("sh", script, node: b, into: %Lacca.TestCollector{pid: parent})
        end)

      assert_receive {:collected, os_pid}, 10_000
      os_pid = os_pid |> String.trim() |> String.to_integer()
      Process.exit(caller, :kill)
      assert_receive {:DOWN, ^ref, :process, _, :killed}
      assert wait_gone(os_pid) == []
      assert none_left?(b)
    end

    test "without :cd the process starts in the target's working directory", %{b: b} do
      cwd = :erpc.call(b, File, :cwd!, [])
      assert {:ok, %Lacca.Result{stdout: out}} = Lacca.run("pwd", [], node: b)
      assert String.trim(out) == cwd
      assert {:ok, %Lacca.Result{stdout: "/tmp\n"}} = Lacca.run("pwd", [], cd: "/tmp", node: b)
    end

    test "a node that is not connected, and one where lacca does not run" do
      host = node() |> Atom.to_string() |> String.split("@") |> List.last()
      nobody = :"nobody_#{System.unique_integer([:positive])}@#{host}"

      assert Lacca.run("true", [], node: nobody) == {:error, {:nodedown, nobody}}
      assert Lacca.start("true", [], node: nobody) == {:error, {:nodedown, nobody}}

      assert_raise Lacca.Error, ~r/nodedown/, fn ->
        Lacca.stream!("true", [], node: nobody) |> Enum.to_list()
      end

      {_peer, bare} = start_peer!(lacca: false)
      assert Lacca.run("true", [], node: bare) == {:error, {:lacca_not_started, bare}}
      assert Lacca.start_link("true", [], node: bare) == {:error, {:lacca_not_started, bare}}
      refute bare in Lacca.nodes()
    end
  end

  describe "process functions on a remote server" do
    test "buffer mode: every function works as on a local process", %{b: b} do
      assert {:ok, pid} = Lacca.start("cat", [], node: b)
      assert node(pid) == b
      os_pid = Lacca.os_pid(pid)
      assert is_integer(os_pid)
      assert Lacca.alive?(pid)
      assert :ok = Lacca.write_stdin(pid, "hello")
      assert {:ok, "hello"} = Lacca.read_stdout(pid)
      assert :ok = Lacca.signal(pid, :sigstop)
      assert wait_state(os_pid, "T")
      assert :ok = Lacca.signal(pid, :sigcont)
      assert {:error, :unknown_signal} = Lacca.signal(pid, :sigfoo)
      assert :ok = Lacca.close_stdin(pid)
      assert {:ok, {:exit, 0}} = Lacca.await(pid)
      assert Lacca.status(pid) == 0
      assert {:ok, ""} = Lacca.read_stdout(pid)
      refute Lacca.alive?(pid)
      assert {:error, :noproc} = Lacca.await(pid)
    end

    test "stop/2 and kill/1; a registered name on the node", %{b: b} do
      {:ok, pid} = Lacca.start("sleep", ["1000"], node: b, name: :lacca_cluster_sleeper)
      os_pid = Lacca.os_pid({:lacca_cluster_sleeper, b})
      assert Lacca.os_pid(pid) == os_pid
      assert :ok = Lacca.stop({:lacca_cluster_sleeper, b})
      assert wait_gone(os_pid) == []

      {:ok, pid} = Lacca.start("sh", ["-c", "trap '' TERM; exec sleep 1000"], node: b)
      os_pid = Lacca.os_pid(pid)
      assert :ok = Lacca.kill(pid)
      assert wait_gone(os_pid) == []
      assert {:ok, {:signal, :sigkill}} = Lacca.await(pid)
      assert :ok = Lacca.stop(pid)
    end

    @tag :capture_log
    test "messages mode: active: :once, set_active/2, the final message", %{b: b} do
      {:ok, pid} =
        Lacca.start("sh", ["-c", "echo one; read x; echo two"],
          node: b,
          output: :messages,
          active: :once
        )

      assert_receive {:lacca, ^pid, {:stdout, "one\n"}}, 5_000
      :ok = Lacca.write_stdin(pid, "go\n")
      refute_received {:lacca, ^pid, {:stdout, _}}
      :ok = Lacca.set_active(pid, true)
      assert_receive {:lacca, ^pid, {:stdout, "two\n"}}, 5_000
      assert_receive {:lacca, ^pid, {:exit, {:exit, 0}}}, 5_000
    end

    @tag :capture_log
    test "start_link/3 links across nodes: the caller gets the server's exit", %{b: b} do
      Process.flag(:trap_exit, true)
      {:ok, pid} = Lacca.start_link("sh", ["-c", "read x; exit 3"], node: b, output: :messages)
      assert {:links, links} = Process.info(self(), :links)
      assert pid in links
      :ok = Lacca.write_stdin(pid, "\n")
      assert_receive {:lacca, ^pid, {:exit, {:exit, 3}}}, 5_000
      assert_receive {:EXIT, ^pid, {:exit_status, 3}}, 5_000
    end

    test "start_link/3 across nodes: a caller that crashes takes the OS process with it",
         %{b: b} do
      parent = self()

      {caller, ref} =
        spawn_monitor(fn ->
          {:ok, pid} = Lacca.start_link("sleep", ["1000"], node: b)
          send(parent, {:started, pid, Lacca.os_pid(pid)})

          receive do
            :crash -> exit(:crash)
          end
        end)

      assert_receive {:started, pid, os_pid}, 10_000
      server_ref = Process.monitor(pid)
      send(caller, :crash)
      assert_receive {:DOWN, ^ref, :process, ^caller, :crash}

      assert_receive {:DOWN, ^server_ref, :process, ^pid, {:shutdown, {:owner_exit, :crash}}},
                     10_000

      assert wait_gone(os_pid) == []
    end

    test "child_spec/1 with node: the supervisor here, the child there", %{b: b} do
      children = [{Lacca, cmd: "sleep", args: ["1000"], node: b, id: :remote_sleeper}]
      {:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one)
      [{:remote_sleeper, pid, :worker, _}] = Supervisor.which_children(sup)
      assert node(pid) == b
      os_pid = Lacca.os_pid(pid)
      :ok = Supervisor.stop(sup)
      assert wait_gone(os_pid) == []
    end
  end

  describe "streams across nodes" do
    test "64 MiB counted exactly, SHA-256 equal", %{b: b} do
      data = :crypto.strong_rand_bytes(64 * 1_048_576)
      path = tmp_file(data)
      expected = :crypto.hash(:sha256, data)

      {hash, count} =
        Lacca.stream!("cat", [path], node: b)
        |> Enum.reduce({:crypto.hash_init(:sha256), 0}, fn chunk, {h, n} ->
          {:crypto.hash_update(h, chunk), n + byte_size(chunk)}
        end)

      assert count == byte_size(data)
      assert :crypto.hash_final(hash) == expected
      refute_received {:lacca, _, _}
    end

    test "input from an Enumerable, lines, tagged stderr, exit statuses", %{b: b} do
      assert ["A\n", "B\n", "C\n"] ==
               Lacca.stream!("tr", ["a-z", "A-Z"],
                 input: Stream.map(~w(a b c), &(&1 <> "\n")),
                 lines: true,
                 node: b
               )
               |> Enum.to_list()

      assert [{:stderr, "err\n"}, {:stdout, "out\n"}] ==
               Lacca.stream!("sh", ["-c", "echo out; echo err >&2"], stderr: :capture, node: b)
               |> Enum.sort()

      assert_raise Lacca.ExitError, ~r/status 3, stderr:\nboom/, fn ->
        Lacca.stream!("sh", ["-c", "echo boom >&2; exit 3"], node: b) |> Enum.to_list()
      end

      assert ["hi\n", {:exit, {:exit, 3}}] ==
               Lacca.stream("sh", ["-c", "echo hi; exit 3"], node: b) |> Enum.to_list()

      assert "xxxxxxxxxx" ==
               Lacca.stream!("head", ["-c", "10"],
                 input: Stream.repeatedly(fn -> "x" end),
                 node: b
               )
               |> Enum.join()
    end

    test "halting early stops the remote process; nothing is left", %{b: b} do
      assert ["y\n", "y\n", "y\n"] =
               Lacca.stream!("yes", [], lines: true, node: b) |> Enum.take(3)

      assert none_left?(b)
      refute_received {:lacca, _, _}
      refute_received {:DOWN, _, _, _, _}
    end

    @tag :heavy
    test "a slow consumer here bounds memory on both nodes; 1 GiB counted exactly", %{b: b} do
      gib = 1_073_741_824
      # Binary memory the transfer may add on either node: the server's
      # :max_buffer per stream (1 MiB) plus the chunks in flight
      # (Lacca.Remote.window/0 of at most 64 KiB), with room for the
      # collector's timing.
      bound = 32 * 1_048_576
      base_here = :erlang.memory(:binary)
      base_there = :erpc.call(b, :erlang, :memory, [:binary])

      {count, peak_here, peak_there, _i} =
        Lacca.stream!("head", ["-c", Integer.to_string(gib), "/dev/zero"], node: b)
        |> Enum.reduce({0, 0, 0, 0}, fn chunk, {n, here, there, i} ->
          # Slow at first: a round trip to the other node per chunk.
          {here, there} =
            if i < 300 or rem(i, 500) == 0 do
              {max(here, :erlang.memory(:binary) - base_here),
               max(there, :erpc.call(b, :erlang, :memory, [:binary]) - base_there)}
            else
              {here, there}
            end

          {n + byte_size(chunk), here, there, i + 1}
        end)

      IO.puts(
        "\nnode:, 1 GiB slowly: peak binary memory #{peak_here} B here, #{peak_there} B on the peer"
      )

      assert count == gib
      assert peak_here < bound, "#{peak_here} bytes of binaries here"
      assert peak_there < bound, "#{peak_there} bytes of binaries on #{b}"
      {:message_queue_len, queued} = Process.info(self(), :message_queue_len)
      assert queued == 0
    end
  end

  describe "placement" do
    test "Lacca.nodes/0 lists the nodes running lacca; node: :any takes turns", %{b: b} do
      assert node() in Lacca.nodes()
      assert b in Lacca.nodes()
      assert Lacca.nodes() == Enum.sort(Lacca.nodes())

      seen = for _ <- 1..6, do: where(node: :any)
      expected = for n <- Lacca.nodes(), do: if(n == node(), do: "", else: short(n))
      assert Enum.sort(Enum.uniq(seen)) == Enum.sort(expected)
      # Round robin: each node in turn, so two runs in a row never go to the same node.
      assert Enum.chunk_every(seen, 2, 1, :discard) |> Enum.all?(fn [x, y] -> x != y end)
    end
  end

  describe "failures" do
    test "the owner's node goes away: the OS processes it owned are stopped" do
      {_peer, o} = start_peer!()
      here = node()
      ignores_term = ["-c", "trap '' TERM; echo ready; while :; do sleep 1; done"]

      cases = [
        {"sleep", ["1000"], [node: here]},
        {"sleep", ["1000"], [node: here, output: :messages]},
        {"sh", ignores_term, [node: here, output: :messages, kill_timeout: 300]},
        {"sleep", ["1000"], [node: here, owner: :self]},
        {"sleep", ["1000"], [node: here, link: true]}
      ]

      os_pids =
        for {cmd, args, opts} <- cases do
          :erpc.call(o, :erlang, :spawn, [Lacca.TestCluster, :owner, [self(), cmd, args, opts]])
          assert_receive {:owner, _owner, {:ok, pid}}, 10_000
          assert node(pid) == here
          Lacca.os_pid(pid)
        end

      # A run/3 caller and a stream consumer on the owner's node.
      script = ["-c", "echo $$; exec sleep 1000"]

      consumers =
        for mode <- [:run, :stream] do
          args = [self(), mode, "sh", script, [node: here]]
          :erpc.call(o, :erlang, :spawn, [Lacca.TestCluster, :consumer, args])
          assert_receive {:collected, os_pid}, 10_000
          os_pid |> String.trim() |> String.to_integer()
        end

      os_pids = os_pids ++ consumers
      assert Enum.all?(os_pids, &os_alive?/1)
      kill_node!(o)
      assert wait_gone(os_pids, 2_000) == []
    end

    test "a netsplit: both nodes live on; each side does its part" do
      {_peer, b} = start_peer!(control: :standard_io)
      here = node()

      {:ok, messages} = Lacca.start("sleep", ["1000"], node: b, output: :messages)
      {:ok, buffer} = Lacca.start("sleep", ["1000"], node: b)
      os_pids = [Lacca.os_pid(messages), Lacca.os_pid(buffer)]

      # The other way round: owned on b, running here.
      :erpc.call(b, :erlang, :spawn, [
        Lacca.TestCluster,
        :owner,
        [self(), "sleep", ["1000"], [node: here, output: :messages]]
      ])

      assert_receive {:owner, _, {:ok, here_pid}}, 10_000
      os_pids = [Lacca.os_pid(here_pid) | os_pids]
      assert Enum.all?(os_pids, &os_alive?/1)

      true = Node.monitor(b, true)
      true = Node.disconnect(b)
      assert_receive {:nodedown, ^b}, 5_000

      # Here: the owner is told; b: stops what it ran for owners here (and
      # this node stops what it ran for b's owner).
      assert_receive {:lacca, ^messages, {:error, :noconnection}}, 5_000
      assert wait_gone(os_pids, 2_000) == []

      # The split heals (a call reconnects, as distributed Erlang does): the
      # servers are gone, nothing comes back.
      assert Lacca.await(buffer) == {:error, :noproc}
      assert b in Node.list()
      refute Lacca.alive?(messages)
    end

    test "the target node goes away: owners are told, calls and runs fail, streams raise" do
      {_peer, t} = start_peer!()
      Process.flag(:trap_exit, true)

      {:ok, messages} = Lacca.start("sleep", ["1000"], node: t, output: :messages)
      {:ok, buffer} = Lacca.start("sleep", ["1000"], node: t)
      {:ok, linked} = Lacca.start_link("sleep", ["1000"], node: t)
      parent = self()

      runner =
        Task.async(fn ->
          Lacca.run("sh", ["-c", "echo started; exec sleep 1000"],
            node: t,
            into: %Lacca.TestCollector{pid: parent}
          )
        end)

      streamer =
        Task.async(fn ->
          try do
            Lacca.stream!("sh", ["-c", "echo started; exec sleep 1000"], node: t)
            |> Enum.each(&send(parent, {:streamed, &1}))
          rescue
            e in Lacca.Error -> {:raised, e.reason}
          end
        end)

      assert_receive {:collected, "started\n"}, 10_000
      assert_receive {:streamed, "started\n"}, 10_000
      awaiter = Task.async(fn -> Lacca.await(buffer) end)

      kill_node!(t)

      assert_receive {:lacca, ^messages, {:error, :noconnection}}, 5_000
      assert_receive {:EXIT, ^linked, :noconnection}, 5_000
      assert Task.await(awaiter) == {:error, :noconnection}
      assert Task.await(runner) == {:error, :noconnection}
      assert Task.await(streamer) == {:raised, :noconnection}
      assert Lacca.await(buffer) == {:error, :noconnection}
      assert Lacca.read_stdout(buffer) == {:error, :noconnection}
      assert Lacca.os_pid(buffer) == nil
      refute Lacca.alive?(buffer)
      assert Lacca.stop(buffer) == :ok
      assert Lacca.run("true", [], node: t) == {:error, {:nodedown, t}}
      refute t in Lacca.nodes()
    end
  end
end
