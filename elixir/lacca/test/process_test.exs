defmodule Lacca.ProcessTest do
  use ExUnit.Case, async: true

  import Lacca.OSHelpers
  import Lacca.DaemonTrace

  @all_bytes for(b <- 0..255, into: <<>>, do: <<b>>)

  test "the lacca 0.2.3 example" do
    {:ok, pid} = Lacca.start("echo", ["hello, world."])
    assert Lacca.read_stdout(pid) == {:ok, "hello, world.\n"}
    assert Lacca.stop(pid) == :ok
    refute Process.alive?(pid)
  end

  test "a server's start makes no garbage collection (it starts with a heap that holds it)" do
    {:ok, pid} = Lacca.start("sleep", ["1000"], stdin: :null)
    {:garbage_collection, gc} = Process.info(pid, :garbage_collection)
    assert gc[:min_heap_size] >= 987
    assert gc[:minor_gcs] == 0
    assert Lacca.stop(pid) == :ok
  end

  test "legacy API: read_stderr, status, alive?" do
    # start/3: at the end the server exits with {:exit_status, 4}.
    {:ok, pid} = Lacca.start("sh", ["-c", "echo oops >&2; read x; exit 4"])
    assert Lacca.read_stderr(pid) == {:ok, "oops\n"}
    assert Lacca.alive?(pid)
    assert Lacca.status(pid) == nil
    assert Lacca.write_stdin(pid, "go\n") == :ok
    assert Lacca.await(pid) == {:ok, {:exit, 4}}
    refute Lacca.alive?(pid)
    assert Lacca.status(pid) == 4
    # The stream ended: reading returns at once.
    assert Lacca.read_stdout(pid) == {:ok, ""}
    assert Lacca.stop(pid) == :ok
  end

  test "read_stdout waits a bounded time for output" do
    {:ok, pid} = Lacca.start_link("sleep", ["100"])
    assert Lacca.read_stdout(pid, 50) == {:ok, ""}
    assert Lacca.stop(pid) == :ok
  end

  test "status is nil after death by a signal; await gives the signal" do
    {:ok, pid} = Lacca.start_link("sleep", ["100"])
    assert Lacca.kill(pid) == :ok
    assert Lacca.await(pid) == {:ok, {:signal, :sigkill}}
    assert Lacca.status(pid) == nil
    refute Lacca.alive?(pid)
    assert Lacca.kill(pid) == :ok
  end

  test "start errors" do
    assert Lacca.start("lacca-no-such-command", []) == {:error, :enoent}
    assert Lacca.start_link("true", [], cd: "/nonexistent") == {:error, {:cwd, :enoent}}
  end

  test "os_pid and await with a timeout" do
    {:ok, pid} = Lacca.start_link("sleep", ["100"])
    os_pid = Lacca.os_pid(pid)
    assert is_integer(os_pid) and os_alive?(os_pid)
    assert Lacca.await(pid, 20) == {:error, :timeout}
    assert Lacca.stop(pid) == :ok
    assert wait_gone(os_pid) == []
    assert Lacca.os_pid(pid) == nil
    assert Lacca.await(pid, 20) == {:error, :noproc}
  end

  test "binary safety both ways through cat" do
    {:ok, pid} = Lacca.start_link("cat", [])
    assert Lacca.write_stdin(pid, @all_bytes) == :ok
    assert Lacca.close_stdin(pid) == :ok
    assert Lacca.await(pid) == {:ok, {:exit, 0}}
    assert read_all(pid, "") == @all_bytes
  end

  test "write_stdin returns once acked; writes keep their order" do
    {:ok, pid} = Lacca.start_link("cat", [])

    for i <- 1..20 do
      assert Lacca.write_stdin(pid, ["line ", Integer.to_string(i), ?\n]) == :ok
    end

    assert Lacca.close_stdin(pid) == :ok
    assert Lacca.await(pid) == {:ok, {:exit, 0}}
    assert read_all(pid, "") == Enum.map_join(1..20, &"line #{&1}\n")
  end

  test "large writes are chunked and flow controlled end to end" do
    # A small output buffer: cat blocks on its stdout, so it stops reading
    # its stdin, so the writer stays parked until the reader catches up.
    {:ok, pid} = Lacca.start_link("cat", [], max_buffer: 8_192)
    data = :crypto.strong_rand_bytes(700_001)
    writer = Task.async(fn -> Lacca.write_stdin(pid, data) end)
    assert read_n(pid, byte_size(data), []) == data
    assert Task.await(writer) == :ok
    assert Lacca.close_stdin(pid) == :ok
    assert Lacca.await(pid) == {:ok, {:exit, 0}}
  end

  test "the output buffer is bounded by :max_buffer" do
    {:ok, pid} = Lacca.start_link("head", ["-c", "300000", "/dev/zero"], max_buffer: 10_000)
    # 300,000 bytes do not fit in the buffer plus the pipe: head must block.
    assert Lacca.await(pid, 200) == {:error, :timeout}
    chunks = read_chunks(pid, 300_000, [])
    assert Enum.all?(chunks, &(byte_size(&1) <= 10_000))
    assert Lacca.await(pid) == {:ok, {:exit, 0}}
  end

  test "stop, kill and a dead server are not held back by unread output" do
    # yes fills its buffer and its pipe, then blocks; nobody reads.
    {:ok, pid} = Lacca.start_link("yes", [], max_buffer: 1_024)
    assert {:ok, "y\n" <> _} = Lacca.read_stdout(pid)
    assert Lacca.stop(pid) == :ok

    {:ok, pid} = Lacca.start_link("yes", [], max_buffer: 1_024)
    assert {:ok, "y\n" <> _} = Lacca.read_stdout(pid)
    assert Lacca.kill(pid) == :ok
    assert Lacca.await(pid) == {:ok, {:signal, :sigkill}}

    {:ok, pid} = Lacca.start("yes", [], max_buffer: 1_024, output: :messages, active: false)
    [{daemon, id, _os_pid}] = lacca_procs_of(pid)
    # Watch what the daemon receives: resin must report the exit although
    # nobody reads the output (the daemon grants the credit to drain it).
    1 = :erlang.trace(daemon, true, [:receive])
    Process.exit(pid, :kill)
    assert_exit_reported(daemon, id)
    :erlang.trace(daemon, false, [:receive])
    refute daemon_has?(daemon, id)
  end

  test "write_stdin after close_stdin, after exit, and with epipe" do
    {:ok, pid} = Lacca.start_link("cat", [])
    assert Lacca.close_stdin(pid) == :ok
    assert Lacca.write_stdin(pid, "late") == {:error, :closed}
    assert Lacca.await(pid) == {:ok, {:exit, 0}}
    assert Lacca.write_stdin(pid, "later") == {:error, :closed}

    {:ok, pid} = Lacca.start_link("true", [])
    assert Lacca.await(pid) == {:ok, {:exit, 0}}
    assert Lacca.write_stdin(pid, "later") == {:error, :exited}
    assert Lacca.close_stdin(pid) == {:error, :exited}

    # The child closes its stdin, then tells us.
    {:ok, pid} = Lacca.start_link("sh", ["-c", "exec 0<&-; echo closed; exec sleep 100"])
    assert Lacca.read_stdout(pid, 5_000) == {:ok, "closed\n"}
    assert Lacca.write_stdin(pid, "x") == {:error, :epipe}
    assert Lacca.stop(pid) == :ok
  end

  test "stdin: :null" do
    {:ok, pid} = Lacca.start_link("cat", [], stdin: :null)
    assert Lacca.await(pid) == {:ok, {:exit, 0}}
  end

  test "close_stdin comes after the writes queued before it" do
    {:ok, pid} = Lacca.start_link("wc", ["-c"])
    data = :binary.copy("x", 300_000)
    # An asynchronous write_stdin request sent from this process, so that it
    # is queued before the close_stdin call below.
    write = :gen_server.send_request(pid, {:write, data})
    assert Lacca.close_stdin(pid) == :ok
    assert :gen_server.wait_response(write, 5_000) == {:reply, :ok}
    assert Lacca.await(pid) == {:ok, {:exit, 0}}
    assert read_all(pid, "") |> String.trim() == "300000"
  end

  test "signals by name and number" do
    script =
      ~s(trap 'echo hup' HUP; trap 'echo usr1' USR1; trap 'exit 7' USR2;) <>
        ~s( echo ready; while :; do sleep 100 & wait $!; done)

    {:ok, pid} = Lacca.start_link("sh", ["-c", script])
    assert read_lines(pid, 1) == ["ready"]
    assert Lacca.signal(pid, :sighup) == :ok
    assert read_lines(pid, 1) == ["hup"]
    assert Lacca.signal(pid, 10) == :ok
    assert read_lines(pid, 1) == ["usr1"]
    assert Lacca.signal(pid, :sigusr2) == :ok
    assert Lacca.await(pid) == {:ok, {:exit, 7}}
    assert Lacca.signal(pid, :sigterm) == {:error, :exited}
  end

  test "sigstop and sigcont" do
    {:ok, pid} = Lacca.start_link("sleep", ["100"])
    os_pid = Lacca.os_pid(pid)
    assert Lacca.signal(pid, :sigstop) == :ok
    assert wait_state(os_pid, "T")
    assert Lacca.signal(pid, :sigcont) == :ok
    assert Lacca.signal(pid, :sigterm) == :ok
    assert Lacca.await(pid) == {:ok, {:signal, :sigterm}}
  end

  test "signal to the process group" do
    # The leader ignores SIGTERM (set after the background sleep started, so
    # the sleep does not): only a group signal reaches the sleep.
    {:ok, pid} = Lacca.start_link("sh", ["-c", "sleep 100 & trap '' TERM; echo $!; wait $!"])
    [bg] = read_lines(pid, 1) |> Enum.map(&String.to_integer/1)
    assert Lacca.signal(pid, :sigterm) == :ok
    assert os_alive?(bg)
    assert Lacca.alive?(pid)
    assert Lacca.signal(pid, :sigterm, group: true) == :ok
    assert Lacca.await(pid) == {:ok, {:exit, 143}}
    assert wait_gone(bg) == []
  end

  test "stop is graceful" do
    {:ok, pid} =
      Lacca.start_link(
        "sh",
        ["-c", "trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 100 & wait $!; done"],
        output: :messages
      )

    assert_receive {:lacca, ^pid, {:stdout, "ready\n"}}, 5_000
    assert Lacca.stop(pid) == :ok
    assert_receive {:lacca, ^pid, {:stdout, "bye\n"}}
    assert_receive {:lacca, ^pid, {:exit, {:exit, 0}}}
    refute Process.alive?(pid)
  end

  test "stop escalates to SIGKILL after the kill timeout" do
    {:ok, pid} =
      Lacca.start_link("sh", ["-c", "trap '' TERM; echo ready; exec sleep 100"],
        output: :messages,
        kill_timeout: 10_000
      )

    assert_receive {:lacca, ^pid, {:stdout, "ready\n"}}, 5_000
    {time, :ok} = :timer.tc(fn -> Lacca.stop(pid, 300) end)
    assert time >= 300_000 and time < 5_000_000
    assert_receive {:lacca, ^pid, {:exit, {:signal, :sigkill}}}
  end

  test ":stop_signal" do
    {:ok, pid} =
      Lacca.start_link(
        "sh",
        ["-c", "trap 'exit 9' INT; echo ready; while :; do sleep 100 & wait $!; done"],
        stop_signal: :sigint
      )

    assert read_lines(pid, 1) == ["ready"]
    waiter = Task.async(fn -> Lacca.await(pid) end)
    assert Lacca.stop(pid) == :ok
    assert Task.await(waiter) == {:ok, {:exit, 9}}
  end

  test "stop of an exited process, and twice" do
    {:ok, pid} = Lacca.start("true", [])
    assert Lacca.await(pid) == {:ok, {:exit, 0}}
    assert Lacca.stop(pid) == :ok
    assert Lacca.stop(pid) == :ok
  end

  test "awaiters and readers are all answered at exit" do
    {:ok, pid} = Lacca.start_link("sh", ["-c", "read x; exit 3"])
    # Asynchronous requests (the ones await/2 and read_stdout/2 make), sent
    # from this process so that they are parked before the write below.
    awaits = for _ <- 1..5, do: :gen_server.send_request(pid, {:await, :infinity})
    read = :gen_server.send_request(pid, {:read, :stdout, :infinity})
    assert Lacca.write_stdin(pid, "\n") == :ok

    for req <- awaits do
      assert :gen_server.wait_response(req, 5_000) == {:reply, {:ok, {:exit, 3}}}
    end

    assert :gen_server.wait_response(read, 5_000) == {:reply, {:ok, ""}}
  end

  test "a dedicated daemon is a resin of its own" do
    {:ok, pid} = Lacca.start_link("sleep", ["100"], daemon: :dedicated)
    shared = Lacca.Daemon.shared()
    resin = resin_of(pid)
    refute resin in Enum.map(shared, &Lacca.Daemon.resin_os_pid/1)
    assert Lacca.stop(pid) == :ok
    assert wait_gone(resin) == []
  end

  test "child_spec/1 runs a process in a supervision tree" do
    children = [
      {Lacca, cmd: "sh", args: ["-c", "echo $$; exec sleep 100"], id: :sleeper}
    ]

    {:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one)
    [{:sleeper, pid, :worker, [Lacca]}] = Supervisor.which_children(sup)
    [os_pid] = read_lines(pid, 1) |> Enum.map(&String.to_integer/1)
    assert os_pid == Lacca.os_pid(pid)
    assert Supervisor.stop(sup) == :ok
    assert wait_gone(os_pid) == []
    refute Process.alive?(pid)
  end

  defp read_n(_pid, 0, acc), do: acc |> Enum.reverse() |> IO.iodata_to_binary()

  defp read_n(pid, n, acc) do
    {:ok, data} = Lacca.read_stdout(pid, 5_000)
    assert data != "", "no output with #{n} bytes to go"
    read_n(pid, n - byte_size(data), [data | acc])
  end

  defp read_chunks(_pid, 0, acc), do: Enum.reverse(acc)

  defp read_chunks(pid, n, acc) do
    {:ok, data} = Lacca.read_stdout(pid, 5_000)
    assert data != "", "no output with #{n} bytes to go"
    read_chunks(pid, n - byte_size(data), [data | acc])
  end
end
