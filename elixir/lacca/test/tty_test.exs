defmodule Lacca.TtyTest do
  # Terminals, identity and resource limits: the :pty, :user, :group and
  # :rlimits options and resize/3, through the real resin.
  use ExUnit.Case, async: true

  import Lacca.OSHelpers

  alias Lacca.Result

  # A start/3 server that ends with a non-zero status logs it.
  @moduletag :capture_log

  @root System.cmd("id", ["-u"]) |> elem(0) |> String.trim() == "0"

  # Output of `pid` (output: :messages) up to and including `needle`.
  defp read_until(pid, needle, acc \\ "") do
    if String.contains?(acc, needle) do
      acc
    else
      receive do
        {:lacca, ^pid, {:stdout, data}} -> read_until(pid, needle, acc <> data)
        {:lacca, ^pid, {:exit, status}} -> flunk("exited #{inspect(status)}: #{inspect(acc)}")
      after
        10_000 -> flunk("no #{inspect(needle)} in 10 s: #{inspect(acc)}")
      end
    end
  end

  describe "pty" do
    test "tty prints a device path" do
      assert {:ok, %Result{stdout: out, stderr: "", status: {:exit, 0}}} =
               Lacca.run("tty", [], pty: true)

      assert out =~ ~r{\A/dev/pts/\d+\r\n\z}
    end

    test "stty size reports the size set" do
      assert {:ok, %Result{stdout: "33 101\r\n"}} =
               Lacca.run("stty", ["size"], pty: [rows: 33, cols: 101])

      assert {:ok, %Result{stdout: "24 80\r\n"}} = Lacca.run("stty", ["size"], pty: true)
      assert {:ok, %Result{stdout: "24 132\r\n"}} = Lacca.run("stty", ["size"], pty: [cols: 132])
    end

    test "0, 1 and 2 are the controlling terminal of a session leader; stderr comes as stdout" do
      script =
        "import os, sys; print(sys.stdin.isatty(), sys.stdout.isatty(), sys.stderr.isatty(), " <>
          "os.getsid(0) == os.getpid(), os.tcgetpgrp(0) == os.getpgrp(), file=sys.stderr)"

      assert {:ok, %Result{stdout: "True True True True True\r\n", stderr: ""}} =
               Lacca.run("python3", ["-c", script], pty: true)

      assert {:ok, %Result{stdout: "True\r\n"}} =
               Lacca.run("python3", ["-c", "import sys; print(sys.stdin.isatty())"], pty: true)
    end

    test "resize/3 sets the size and the process gets SIGWINCH" do
      script =
        "import os, signal; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGWINCH}); " <>
          "print('ready', flush=True); signal.sigwait({signal.SIGWINCH}); " <>
          "s = os.get_terminal_size(0); print('size', s.lines, s.columns, flush=True)"

      {:ok, pid} = Lacca.start("python3", ["-c", script], pty: true, output: :messages)
      # The whole line: the next read is the answer.
      read_until(pid, "ready\r\n")
      assert Lacca.resize(pid, 50, 132) == :ok
      assert read_until(pid, "\n") |> String.trim() == "size 50 132"
      assert_receive {:lacca, ^pid, {:exit, {:exit, 0}}}, 5_000
    end

    test "resize/3 errors" do
      {:ok, pid} = Lacca.start("cat", [])
      assert Lacca.resize(pid, 10, 10) == {:error, :not_a_pty}
      assert_raise ArgumentError, ~r/rows/, fn -> Lacca.resize(pid, 0, 10) end
      assert_raise ArgumentError, ~r/cols/, fn -> Lacca.resize(pid, 10, 65_536) end
      :ok = Lacca.stop(pid)
      assert Lacca.resize(pid, 10, 10) == {:error, :noproc}
    end

    test "an interactive sh driven through write_stdin and the output" do
      {:ok, pid} =
        Lacca.start("sh", ["-i"], pty: true, output: :messages, env: %{"PS1" => "$ ", "ENV" => ""})

      read_until(pid, "$ ")
      :ok = Lacca.write_stdin(pid, "echo $((6 * 7))\n")
      # The terminal echoes the input, then the shell answers and prompts.
      assert read_until(pid, "42\r\n$ ") == "echo $((6 * 7))\r\n42\r\n$ "
      :ok = Lacca.write_stdin(pid, "exit 3\n")
      assert_receive {:lacca, ^pid, {:exit, {:exit, 3}}}, 5_000
    end

    test "close_stdin/1 sends the EOF character; :input ends with it too" do
      {:ok, pid} =
        Lacca.start("sh", ["-c", "stty -echo; echo ready; cat; echo done; exec sleep 1000"],
          pty: true,
          output: :messages
        )

      read_until(pid, "ready\r\n")
      :ok = Lacca.write_stdin(pid, "one line\n")
      assert Lacca.close_stdin(pid) == :ok
      assert read_until(pid, "done\r\n") == "one line\r\ndone\r\n"
      assert Lacca.write_stdin(pid, "more") == {:error, :closed}
      :ok = Lacca.kill(pid)

      # The terminal echoes the input as it is written, then cat writes it.
      assert {:ok, %Result{stdout: "abc\r\nabc\r\n", status: {:exit, 0}}} =
               Lacca.run("cat", [], pty: true, input: "abc\n")

      # Without :input the terminal gets its EOF character at once; with
      # stdin: :pipe it stays open.
      assert {:ok, %Result{stdout: "", status: {:exit, 0}}} = Lacca.run("cat", [], pty: true)

      assert {:ok, %Result{stdout: "", status: :timeout}} =
               Lacca.run("cat", [], pty: true, stdin: :pipe, timeout: 200)
    end

    test "stream!/3 on a terminal, read only as fast as it is consumed" do
      assert Lacca.stream!("sh", ["-c", "stty -onlcr; printf 'a\\nb\\n'"], pty: true)
             |> Enum.join() == "a\nb\n"

      # 4 MiB through a 64 KiB window.
      total =
        Lacca.stream!("sh", ["-c", "stty raw -echo; head -c 4194304 /dev/zero"],
          pty: true,
          max_buffer: 65_536
        )
        |> Enum.reduce(0, &(byte_size(&1) + &2))

      assert total == 4_194_304

      assert Lacca.stream!("yes", [], pty: true, lines: true) |> Enum.take(2) == [
               "y\r\n",
               "y\r\n"
             ]
    end

    test "the process group and its background job go when the server is killed" do
      {:ok, pid} =
        Lacca.start("sh", ["-c", "sleep 1000 & echo $$ $!; exec sleep 1000"],
          pty: true,
          output: :messages
        )

      pids = read_until(pid, "\n") |> String.split() |> Enum.map(&String.to_integer/1)
      assert Enum.all?(pids, &os_alive?/1)
      Process.exit(pid, :kill)
      assert wait_gone(pids) == []
    end

    test "options that do not go with a terminal" do
      assert_raise ArgumentError, ~r/stdin: :null cannot be combined with :pty/, fn ->
        Lacca.run("true", [], pty: true, stdin: :null)
      end

      assert_raise ArgumentError, ~r/stderr: :capture cannot be combined with :pty/, fn ->
        Lacca.start("true", [], pty: true, stderr: :capture)
      end

      # The message shows the value as given (not with cols: 80 merged in).
      assert_raise ArgumentError, ~r/invalid value for :pty option: .*, got: \[rows: 0\]$/, fn ->
        Lacca.run("true", [], pty: [rows: 0])
      end

      assert_raise ArgumentError, ~r/invalid value for :pty option/, fn ->
        Lacca.run("true", [], pty: [lines: 3])
      end

      assert_raise ArgumentError, ~r/invalid value for :pty option/, fn ->
        Lacca.run("true", [], pty: :yes)
      end

      # Not a keyword list (an improper one, a list of other terms).
      assert_raise ArgumentError, ~r/invalid value for :pty option/, fn ->
        Lacca.run("true", [], pty: [{:rows, 2} | :x])
      end

      assert_raise ArgumentError, ~r/invalid value for :pty option/, fn ->
        Lacca.run("true", [], pty: [24, 80])
      end

      assert_raise ArgumentError, ~r/log_stderr/, fn ->
        Lacca.start("true", [], pty: true, log_output: :info, log_stderr: true)
      end

      assert {:ok, %Result{stdout: "x\r\n"}} =
               Lacca.run("sh", ["-c", "echo x >&2"], pty: true, stderr: :stdout)
    end
  end

  describe "user and group" do
    @describetag skip: if(@root, do: false, else: "switching user needs a root resin")

    test "user: \"nobody\": id -u and id -G match the user's" do
      {expected_groups, 0} = System.cmd("id", ["-G", "nobody"])
      {expected_uid, 0} = System.cmd("id", ["-u", "nobody"])

      assert {:ok, %Result{stdout: out, status: {:exit, 0}}} =
               Lacca.run("sh", ["-c", "id -u; id -G"], user: "nobody", cd: "/")

      assert out == expected_uid <> expected_groups
      uid = expected_uid |> String.trim() |> String.to_integer()

      assert {:ok, %Result{stdout: ^expected_uid}} = Lacca.run("id", ["-u"], user: uid, cd: "/")
    end

    test "supplementary groups are the user's (initgroups)" do
      member =
        File.read!("/etc/group")
        |> String.split("\n", trim: true)
        |> Enum.flat_map(&(&1 |> String.split(":") |> Enum.at(3, "") |> String.split(",")))
        |> Enum.find(&(&1 != "" and match?({_, 0}, System.cmd("id", ["-u", &1]))))

      if member do
        {expected, 0} = System.cmd("id", ["-G", member])
        assert {:ok, %Result{stdout: ^expected}} = Lacca.run("id", ["-G"], user: member, cd: "/")
        assert length(String.split(expected)) > 1
      end
    end

    test "group: sets the group and the only supplementary group" do
      {gid, 0} = System.cmd("id", ["-g", "nobody"])
      gid = String.trim(gid)

      assert {:ok, %Result{stdout: out}} =
               Lacca.run("sh", ["-c", "id -u; id -g; id -G"],
                 group: String.to_integer(gid),
                 cd: "/"
               )

      assert String.split(out) == ["0", gid, gid]
    end

    test "unknown user or group" do
      assert Lacca.run("true", [], user: "no-such-user-here") == {:error, {:user, :enoent}}
      assert Lacca.run("true", [], group: "no-such-group-here") == {:error, {:group, :enoent}}
      assert Lacca.start("true", [], user: "no-such-user-here") == {:error, {:user, :enoent}}
    end

    test "a pty process of another user" do
      assert {:ok, %Result{stdout: out}} =
               Lacca.run("sh", ["-c", "id -un; tty"], user: "nobody", pty: true, cd: "/")

      assert out =~ ~r{\Anobody\r\n/dev/pts/\d+\r\n\z}
    end
  end

  test "bad :user, :group and :rlimits values" do
    for {opts, key} <- [
          {[user: ""], ":user"},
          {[user: -1], ":user"},
          {[group: :wheel], ":group"},
          {[user: "a\0b"], ":user"},
          {[rlimits: [nofile: -1]], ":rlimits"},
          {[rlimits: [fsize: 9_223_372_036_854_775_808]], ":rlimits"},
          {[rlimits: [bogus: 1]], ":rlimits"},
          {[rlimits: [nofile: {10, 5}]], ":rlimits"},
          {[rlimits: [nofile: {:infinity, 5}]], ":rlimits"},
          {[rlimits: :none], ":rlimits"}
        ] do
      assert_raise ArgumentError, ~r/#{key}/, fn -> Lacca.run("true", [], opts) end
    end
  end

  describe "rlimits" do
    defp limits(rlimits) do
      {:ok, %Result{stdout: out, status: {:exit, 0}}} =
        Lacca.run("cat", ["/proc/self/limits"], rlimits: rlimits)

      for line <- out |> String.split("\n", trim: true) |> tl(), into: %{} do
        [name, soft, hard | _] = String.split(line, ~r/\s{2,}/, trim: true)
        {name, {soft, hard}}
      end
    end

    @rows %{
      nofile: "Max open files",
      as: "Max address space",
      cpu: "Max cpu time",
      core: "Max core file size",
      nproc: "Max processes",
      fsize: "Max file size",
      stack: "Max stack size",
      data: "Max data size",
      locks: "Max file locks",
      sigpending: "Max pending signals",
      msgqueue: "Max msgqueue size",
      rttime: "Max realtime timeout"
    }

    test "each limit shows in /proc/self/limits" do
      cases = [
        nofile: {100, 200},
        as: {1_073_741_824, 2_147_483_648},
        cpu: {10, 20},
        core: 0,
        nproc: {500, 1000},
        fsize: {1_048_576, :infinity},
        stack: {4_194_304, 8_388_608},
        data: {1_073_741_824, :infinity},
        locks: {10, 20},
        sigpending: 100,
        msgqueue: {4096, 8192},
        rttime: {1000, 2000}
      ]

      for {name, limit} <- cases do
        {soft, hard} = if is_tuple(limit), do: limit, else: {limit, limit}
        text = fn n -> if n == :infinity, do: "unlimited", else: Integer.to_string(n) end

        assert limits([{name, limit}])[@rows[name]] == {text.(soft), text.(hard)},
               "#{name}: #{inspect(limit)}"
      end
    end

    test "several at once" do
      table = limits(nofile: 64, core: 0, cpu: {5, :infinity})
      assert table["Max open files"] == {"64", "64"}
      assert table["Max core file size"] == {"0", "0"}
      assert table["Max cpu time"] == {"5", "unlimited"}
    end

    @tag skip: if(@root, do: false, else: "needs a root resin to run as nobody")
    test "nproc is enforced: a user allowed one process cannot fork" do
      assert {:ok, %Result{stdout: "", stderr: err}} =
               Lacca.run("sh", ["-c", "sleep 0 & wait; echo forked"],
                 user: "nobody",
                 cd: "/",
                 rlimits: [nproc: 1]
               )

      assert err =~ ~r/fork/i
    end

    test "with a terminal and with start/3" do
      {:ok, pid} = Lacca.start("sh", ["-c", "ulimit -n"], rlimits: [nofile: 77], pty: true)
      assert Lacca.await(pid) == {:ok, {:exit, 0}}
      assert Lacca.read_stdout(pid) == {:ok, "77\r\n"}
    end
  end
end
