defmodule Lacca.EscapeTest do
  # Nothing escapes: descendants that left the process group (setsid, double
  # forks, daemons that ignore TERM and HUP, fork loops) die with their OS
  # process however it ends. Kills resins: not concurrently with the async
  # modules.
  use ExUnit.Case, async: false

  import Lacca.OSHelpers

  @moduletag :capture_log

  # One pid printed per kind of escapee, then the leader waits for its stdin
  # to close (shared with tests/test_escape.py). The env -i sleep has no
  # cookie; its parent stays alive, so the live process tree links it. (One
  # that clears its environment *and* whose parent has exited is not
  # attributable without cgroups: see the README.)
  @external_resource Path.expand("../../../tests/escapees.sh", __DIR__)
  @script File.read!(@external_resource)
  @kinds 6

  defp start_escapees(opts \\ []) do
    {:ok, pid} = Lacca.start("sh", ["-c", @script], opts)
    pids = pid |> read_lines(@kinds) |> Enum.map(&String.to_integer/1)
    all = [Lacca.os_pid(pid) | pids]
    assert Enum.all?(all, &os_alive?/1)
    {pid, all, cookie_of(Lacca.os_pid(pid))}
  end

  # The RESIN_TREE value of a process, cut to its resin's prefix.
  defp cookie_of(os_pid) do
    environ = File.read!("/proc/#{os_pid}/environ")

    ["RESIN_TREE=" <> value] =
      environ |> String.split(<<0>>) |> Enum.filter(&(&1 =~ ~r/^RESIN_TREE=/))

    [resin, start, _serial] = String.split(value, ".")
    "RESIN_TREE=#{resin}.#{start}."
  end

  defp assert_none_left(pids, prefix) do
    assert wait_gone(pids) == []
    # The fork loop's current sleep too: nothing with the cookie is left.
    assert wait_until(fn -> Lacca.Cleanup.holders(prefix) == [] end)
  end

  test "Lacca.stop/1: TERM to the group and the escapees, then SIGKILL to what is left" do
    {pid, pids, prefix} = start_escapees(kill_timeout: 200)
    assert Lacca.stop(pid) == :ok
    assert_none_left(pids, prefix)
  end

  test "Lacca.kill/1" do
    {pid, pids, prefix} = start_escapees()
    assert Lacca.kill(pid) == :ok
    assert_none_left(pids, prefix)
  end

  test "the start_link owner killed" do
    test = self()

    owner =
      spawn(fn ->
        {:ok, pid} = Lacca.start_link("sh", ["-c", @script])
        send(test, {:started, pid, read_lines(pid, @kinds)})
        receive(do: (:never -> :ok))
      end)

    assert_receive {:started, pid, lines}, 5_000
    pids = [Lacca.os_pid(pid) | Enum.map(lines, &String.to_integer/1)]
    prefix = cookie_of(hd(pids))
    Process.exit(owner, :kill)
    assert_none_left(pids, prefix)
  end

  test "the run/3 caller killed" do
    test = self()

    caller =
      spawn(fn ->
        # run/3 gives the process /dev/null as stdin: the leader must not wait on it.
        script = String.replace(@script, "read x", "exec sleep 1000")
        Lacca.run("sh", ["-c", script], into: %Lacca.TestCollector{pid: test})
      end)

    lines = collect_lines(@kinds, "")
    # The leader is not among them, but it carries the cookie like the rest.
    pids = Enum.map(lines, &String.to_integer/1)
    prefix = cookie_of(hd(pids))
    Process.exit(caller, :kill)
    assert_none_left(pids, prefix)
  end

  test "resin killed with SIGKILL while lacca runs" do
    {pid, pids, prefix} = start_escapees(daemon: :dedicated)
    os_kill(resin_of(pid))
    assert_none_left(pids, prefix)
  end

  defp collect_lines(n, acc) do
    lines = String.split(acc, "\n", trim: true)

    if length(lines) >= n and String.ends_with?(acc, "\n") do
      lines
    else
      assert_receive {:collected, data}, 5_000
      collect_lines(n, acc <> data)
    end
  end

  test "info/0 tells the containment in use; config :lacca, :cgroups, false forces the tree" do
    assert {:ok, %{containment: mode, resin: resin}} = Lacca.info()
    assert mode in [:cgroup2, :process_tree]
    assert File.exists?(resin)

    Application.put_env(:lacca, :cgroups, false)

    try do
      assert {:ok, %Lacca.Result{stdout: out}} =
               Lacca.run("cat", ["/proc/self/cgroup"], daemon: :dedicated)

      refute out =~ "/resin-"
    after
      Application.delete_env(:lacca, :cgroups)
    end
  end

  test "with cgroups, even a daemon without cookie or parent goes" do
    case Lacca.info() do
      {:ok, %{containment: :cgroup2}} ->
        script = ~S"(setsid env -i sh -c 'echo $$; exec sleep 1007' &); exec sleep 1000"
        {:ok, pid} = Lacca.start("sh", ["-c", script])
        [daemon] = pid |> read_lines(1) |> Enum.map(&String.to_integer/1)
        assert os_alive?(daemon)
        assert Lacca.kill(pid) == :ok
        assert wait_gone([daemon]) == []

      {:ok, %{containment: :process_tree}} ->
        # Not attributable without cgroups (README, "Stopping and cleanup").
        :ok
    end
  end

  test "cgroup limits: applied, or a clear error; bad ones raise" do
    result = Lacca.run("cat", ["/proc/self/cgroup"], cgroup: [pids_max: 64])

    case {Lacca.info(), result} do
      {{:ok, %{containment: :process_tree}}, _} ->
        assert result == {:error, {:cgroup, :enotsup}}

      {{:ok, %{containment: :cgroup2}}, {:error, {:cgroup, :enoent}}} ->
        # The pids controller is not enabled in this cgroup hierarchy (as on
        # this repository's machine, where it is bound to cgroup v1).
        :ok

      {{:ok, %{containment: :cgroup2}}, {:ok, %Lacca.Result{stdout: out}}} ->
        [path] = Regex.run(~r{^0::(.*)$}m, out, capture: :all_but_first)
        assert out =~ "/resin-"
        assert is_binary(path)
    end

    assert_raise ArgumentError, ~r/invalid value for :cgroup option/, fn ->
      Lacca.run("true", [], cgroup: [memory_max: 0])
    end

    assert_raise ArgumentError, ~r/invalid value for :cgroup option/, fn ->
      Lacca.run("true", [], cgroup: [swap_max: 1])
    end
  end
end
