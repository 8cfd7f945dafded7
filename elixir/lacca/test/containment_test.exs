defmodule Lacca.ContainmentTest do
  # Kills resin and stops the :lacca application: not concurrently with the
  # other (async) test modules, which ExUnit runs before this one.
  use ExUnit.Case, async: false

  import Lacca.OSHelpers

  @moduletag :capture_log

  # How long a resin's death may take to reach owners and callers: each
  # daemon answers after Lacca.Cleanup.kill_all/2, whose /proc scans took
  # 0.7-2.7 s under two `yes` hogs on 2 cores (load 7-9; the final message
  # came up to 6.4 s after the kill): 5 s was too tight.
  @resin_down_wait 30_000

  # Prints the leader's pid and its background child's (a grandchild of resin).
  @script "sleep 1000 & echo $$ $!; exec sleep 1000"

  test "start_link: the owner's crash kills the OS process and its grandchild" do
    test = self()

    owner =
      spawn(fn ->
        {:ok, pid} = Lacca.start_link("sh", ["-c", @script])
        send(test, {:started, pid, read_lines(pid, 1)})
        receive(do: (:never -> :ok))
      end)

    assert_receive {:started, pid, [line]}, 5_000
    pids = to_pids(line)
    assert Enum.all?(pids, &os_alive?/1)
    assert group_members(hd(pids)) |> Enum.sort() == Enum.sort(pids)
    ref = Process.monitor(pid)
    Process.exit(owner, :crash)
    assert_receive {:DOWN, ^ref, :process, ^pid, _}, 5_000
    assert wait_gone(pids) == []
  end

  test "start_link with sh -c 'sleep 1000 & sleep 1000': the whole group goes" do
    test = self()

    owner =
      spawn(fn ->
        {:ok, pid} = Lacca.start_link("sh", ["-c", "sleep 1000 & sleep 1000"])
        send(test, {:started, pid})
        receive(do: (:never -> :ok))
      end)

    assert_receive {:started, pid}, 5_000
    pgid = Lacca.os_pid(pid)
    # sh forks both sleeps right away; wait until the group is complete.
    assert wait_until(fn -> length(group_members(pgid)) == 3 end)
    members = group_members(pgid)
    Process.exit(owner, :kill)
    assert wait_gone(members) == []
    assert group_members(pgid) == []
  end

  test "owner: the process is stopped when the owner exits" do
    owner = spawn(fn -> receive(do: (:go -> :ok)) end)
    {:ok, pid} = Lacca.start("sh", ["-c", @script], owner: owner)
    pids = pid |> read_lines(1) |> hd() |> to_pids()
    ref = Process.monitor(pid)
    send(owner, :go)
    assert_receive {:DOWN, ^ref, :process, ^pid, :normal}, 5_000
    assert wait_gone(pids) == []
  end

  test "a killed process server takes its OS process group with it" do
    {:ok, pid} = Lacca.start("sh", ["-c", @script])
    pids = pid |> read_lines(1) |> hd() |> to_pids()
    Process.exit(pid, :kill)
    assert wait_gone(pids) == []
  end

  test "resin killed: owners and awaiters get :resin_down, the daemon restarts" do
    test = self()

    {:ok, buffered} = Lacca.start("sh", ["-c", @script])
    # start/3: the server exits with :resin_down, which would take a linked
    # test process with it.
    {:ok, messages} = Lacca.start("sh", ["-c", @script], output: :messages)

    runner =
      Task.async(fn ->
        Lacca.run("sh", ["-c", @script], into: %Lacca.TestCollector{pid: test})
      end)

    pids =
      (read_lines(buffered, 1) ++
         [receive_line(messages)] ++
         [receive_collected()])
      |> Enum.flat_map(&to_pids/1)

    # A parked await/2 request.
    awaiter = :gen_server.send_request(buffered, {:await, :infinity})
    assert Lacca.alive?(buffered)

    # Kill every shared resin: the processes are spread over them.
    killed =
      for name <- Lacca.Daemon.shared(),
          resin = Lacca.Daemon.resin_os_pid(name),
          do: {name, Process.whereis(name), resin}

    resins = for {_, _, resin} <- killed, do: resin
    Enum.each(resins, &os_kill/1)

    assert :gen_server.wait_response(awaiter, @resin_down_wait) == {:reply, {:error, :resin_down}}
    assert_receive {:lacca, ^messages, {:error, :resin_down}}, @resin_down_wait
    assert Task.await(runner, @resin_down_wait) == {:error, :resin_down}
    assert Lacca.await(buffered) == {:error, :resin_down}
    assert Lacca.status(buffered) == nil
    refute Lacca.alive?(buffered)
    assert Lacca.write_stdin(buffered, "x") == {:error, :resin_down}
    assert wait_gone(pids) == []

    # New work gets new resins.
    for _ <- Lacca.Daemon.shared() do
      assert {:ok, %Lacca.Result{stdout: "again\n"}} = Lacca.run("echo", ["again"])
    end

    for {name, old, _} <- killed do
      assert Process.whereis(name) not in [nil, old]
      assert Lacca.Daemon.resin_os_pid(name) not in resins
    end

    assert Lacca.stop(buffered) == :ok
  end

  test "a dedicated resin dying only affects its own process" do
    {:ok, shared} = Lacca.start_link("sleep", ["1000"])
    # start/3: the server exits with :resin_down (see above).
    {:ok, dedicated} = Lacca.start("sleep", ["1000"], daemon: :dedicated, output: :messages)
    os_kill(resin_of(dedicated))
    assert_receive {:lacca, ^dedicated, {:error, :resin_down}}, @resin_down_wait
    assert Lacca.alive?(shared)
    assert Lacca.stop(shared) == :ok
  end

  test "stopping the :lacca application stops everything it started" do
    test = self()
    {:ok, a} = Lacca.start("sh", ["-c", @script])
    {:ok, b} = Lacca.start("sh", ["-c", @script], daemon: :dedicated)

    runner =
      Task.async(fn ->
        Lacca.run("sh", ["-c", @script], into: %Lacca.TestCollector{pid: test})
      end)

    pids =
      (read_lines(a, 1) ++ read_lines(b, 1) ++ [receive_collected()])
      |> Enum.flat_map(&to_pids/1)

    assert Enum.all?(pids, &os_alive?/1)
    refs = Enum.map([a, b], &Process.monitor/1)

    :ok = Application.stop(:lacca)

    for ref <- refs, do: assert_received({:DOWN, ^ref, :process, _, _})
    assert Task.await(runner) == {:error, :resin_down}
    assert wait_gone(pids) == []

    assert_raise RuntimeError, ~r/application is not started/, fn -> Lacca.run("true", []) end
    assert_raise RuntimeError, ~r/application is not started/, fn -> Lacca.start("true", []) end

    {:ok, _} = Application.ensure_all_started(:lacca)
    assert {:ok, %Lacca.Result{stdout: "back\n"}} = Lacca.run("echo", ["back"])
  end

  test "no resin: the error says how to install one" do
    for {put, delete} <- [
          {fn -> Application.put_env(:lacca, :resin, "/nonexistent/resin") end,
           fn -> Application.delete_env(:lacca, :resin) end},
          {fn -> System.put_env("LACCA_RESIN", "/nonexistent/resin") end,
           restore_env("LACCA_RESIN")}
        ] do
      put.()

      try do
        assert {:error, {:resin_not_found, message}} = Lacca.Resin.find()
        assert message =~ "/nonexistent/resin"
        assert message =~ "make setup"
        assert message =~ "pip install"
        assert message =~ "LACCA_RESIN"

        assert {:error, {:resin_not_found, ^message}} = Lacca.run("true", [], daemon: :dedicated)

        assert {:error, {:resin_not_found, ^message}} =
                 Lacca.start("true", [], daemon: :dedicated)
      after
        delete.()
      end
    end

    assert {:ok, _} = Lacca.Resin.find()
  end

  @tag timeout: 60_000
  test "the BEAM killed with SIGKILL: every child and grandchild is gone within 2 s" do
    ebin = Application.app_dir(:lacca, "ebin")

    script = ~S"""
    {:ok, _} = Application.ensure_all_started(:lacca)
    sh = "sleep 1000 & echo $$ $!; exec sleep 1000"
    {:ok, a} = Lacca.start("sh", ["-c", sh])
    {:ok, b} = Lacca.start_link("sh", ["-c", sh], daemon: :dedicated)
    {:ok, la} = Lacca.read_stdout(a, 10_000)
    {:ok, lb} = Lacca.read_stdout(b, 10_000)
    IO.write("#{System.pid()}\n" <> la <> lb)
    spawn(fn -> Lacca.run("sh", ["-c", sh], into: IO.stream(:stdio, :line)) end)
    receive(do: (:never -> :ok))
    """

    # start/3: the server exits with {:signal, :sigkill}, which would take a
    # linked test process with it.
    {:ok, beam} = Lacca.start("elixir", ["-pa", ebin, "-e", script], output: :messages)

    [beam_pid | lines] = receive_lines(beam, 4, "")
    beam_pid = String.to_integer(beam_pid)
    pids = Enum.flat_map(lines, &to_pids/1)
    assert length(pids) == 6
    assert Enum.all?(pids, &os_alive?/1)

    os_kill(beam_pid)
    assert_receive {:lacca, ^beam, {:exit, {:signal, :sigkill}}}, 5_000
    left = wait_gone(pids, 2_000)
    assert left == [], "still alive after 2 s: #{describe(left)}"
  end

  defp restore_env(name) do
    case System.get_env(name) do
      nil -> fn -> System.delete_env(name) end
      value -> fn -> System.put_env(name, value) end
    end
  end

  defp describe(pids) do
    Enum.map_join(pids, "; ", fn pid ->
      stat = File.read("/proc/#{pid}/stat")
      cmd = File.read("/proc/#{pid}/cmdline")
      "#{pid}: #{inspect(stat)} #{inspect(cmd)}"
    end)
  end

  defp to_pids(line), do: line |> String.split() |> Enum.map(&String.to_integer/1)

  defp receive_line(pid) do
    assert_receive {:lacca, ^pid, {:stdout, line}}, 5_000
    line
  end

  defp receive_collected do
    assert_receive {:collected, line}, 5_000
    line
  end

  defp receive_lines(pid, n, acc) do
    lines = String.split(acc, "\n", trim: true)

    if length(lines) >= n and String.ends_with?(acc, "\n") do
      lines
    else
      receive do
        {:lacca, ^pid, {:stdout, data}} -> receive_lines(pid, n, acc <> data)
        {:lacca, ^pid, {:stderr, data}} -> IO.write(:stderr, data) && receive_lines(pid, n, acc)
        {:lacca, ^pid, {:exit, status}} -> flunk("child BEAM exited: #{inspect(status)}")
      after
        30_000 -> flunk("no output from the child BEAM; got #{inspect(acc)}")
      end
    end
  end
end
