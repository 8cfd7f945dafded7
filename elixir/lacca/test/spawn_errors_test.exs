defmodule Lacca.SpawnErrorsTest do
  # The closed set of spawn errors, the one shape of {:resin_failed, failure},
  # and a spawn refused for lack of resources (:emfile) tried on another
  # shared resin. Restarts the :lacca application with other settings: not
  # concurrently with the async test modules (ExUnit runs them first).
  use ExUnit.Case, async: false

  import Lacca.AppEnv

  alias Lacca.Daemon

  @moduletag :capture_log

  @keys [:prestart, :resin, :shared_daemons]

  setup do
    isolate(:spawn_errors, @keys)
  end

  describe "spawn errors: one closed set" do
    test "the errno list of the code is the documented t:Lacca.errno/0" do
      {:ok, types} = Code.Typespec.fetch_types(Lacca)

      [{:type, {:errno, {:type, _, :union, atoms}, []}}] =
        for {:type, {:errno, _, _}} = t <- types, do: t

      assert Enum.sort(for {:atom, _, a} <- atoms, do: a) == Enum.sort(Lacca.Error.errnos())
    end

    test "reasons resin and lacca give, end to end", %{dir: dir} do
      plain = Path.join(dir, "plain")
      File.write!(plain, "not a program")

      assert Lacca.run("/nonexistent/program", []) == {:error, :enoent}
      assert Lacca.run("no-such-program-on-the-path", []) == {:error, :enoent}
      assert Lacca.run(plain, []) == {:error, :eacces}
      assert Lacca.run(dir, []) == {:error, :eacces}
      assert Lacca.run("true", [], cd: "/nonexistent") == {:error, {:cwd, :enoent}}
      assert Lacca.run("true", [], cd: plain) == {:error, {:cwd, :enotdir}}
      assert Lacca.start("/nonexistent/program", []) == {:error, :enoent}

      error = assert_raise Lacca.Error, fn -> Lacca.stream!(plain, []) |> Enum.to_list() end
      assert error.reason == :eacces
    end

    test "resin's reasons outside the set are mapped into it" do
      for reason <- [:enoent, :emfile, {:cwd, :eacces}, {:cgroup, :enotsup}, :resin_down] do
        assert Lacca.Error.spawn_reason(reason) == reason
      end

      assert Lacca.Error.spawn_reason(:exdev) == :eio
      assert Lacca.Error.spawn_reason(:errno200) == :eio
      assert Lacca.Error.spawn_reason({:cwd, :exdev}) == {:cwd, :eio}
      assert Lacca.Error.spawn_reason(:id_in_use) == {:resin_failed, :protocol_error}
      assert Lacca.Error.spawn_reason({:weird, 1, 2}) == {:resin_failed, :protocol_error}
    end
  end

  describe "{:resin_failed, failure}" do
    test "resin that cannot run (a bad interpreter): the same shape, whatever the API",
         %{dir: dir} do
      restart!(prestart: false, resin: script!(dir, "bad-interpreter", "#!/nonexistent/sh", ""))
      assert {:error, {:resin_failed, failure}} = Lacca.run("true", [])
      assert match?({:exit_status, n} when n > 0, failure) or failure == :exited
      assert {:error, {:resin_failed, _}} = Lacca.start("true", [])

      error = assert_raise Lacca.Error, fn -> Lacca.stream!("true", []) |> Enum.to_list() end
      assert {:resin_failed, _} = error.reason
    end

    test "resin that exits: {:exit_status, n}, or :exited when its status is lost",
         %{dir: dir} do
      restart!(prestart: false, resin: script!(dir, "exiting", "exit 3"))

      for _ <- Daemon.shared() do
        assert {:error, {:resin_failed, reason}} = Lacca.run("true", [])
        assert reason in [{:exit_status, 3}, :exited]
      end
    end

    test "a handshake in another protocol version, or not a handshake", %{dir: dir} do
      # Reads the hello (4 bytes: {packet, 2}, HELLO, 1), answers for version 7.
      restart!(
        prestart: false,
        resin: script!(dir, "v7", "head -c 4 >/dev/null\nprintf '\\000\\002\\001\\007'\ncat")
      )

      assert Lacca.run("true", []) == {:error, {:resin_failed, {:protocol_version, 7}}}

      restart!(resin: script!(dir, "chatty", "head -c 4 >/dev/null\nprintf '\\000\\002hi'\ncat"))
      assert Lacca.run("true", []) == {:error, {:resin_failed, {:bad_handshake, "hi"}}}
    end
  end

  describe "a spawn refused for lack of descriptors is tried on another shared resin" do
    test "after freeing 6 processes of one resin, 5 new starts all succeed, on it",
         %{dir: dir, resin: resin} do
      # Shared resins that run out of descriptors after a few children.
      wrapper = script!(dir, "few-fds", "ulimit -n 40\nexec #{resin} \"$@\"")
      restart!(resin: wrapper, shared_daemons: 3)
      resins = Enum.map(Daemon.shared(), &Daemon.resin_os_pid/1)

      started = fill()

      try do
        # Every resin took its share before the first :emfile.
        per_resin = Enum.frequencies_by(started, &parent/1)
        assert Enum.sort(Map.keys(per_resin)) == Enum.sort(resins)

        # Free 6 processes of one resin (a spawn needs up to 9 descriptors
        # for a moment, 3 while it runs): round robin alone would send 3 or 4
        # of 5 new starts to the two full resins.
        full_resin = hd(resins)
        assert per_resin[full_resin] >= 6
        freed = started |> Enum.filter(&(parent(&1) == full_resin)) |> Enum.take(6)
        Enum.each(freed, &Lacca.stop/1)

        again =
          for _ <- 1..5 do
            assert {:ok, pid} = Lacca.start("sleep", ["60"])
            pid
          end

        assert Enum.map(again, &parent/1) == List.duplicate(full_resin, 5)

        # All full again (the freed resin had room for one more, at most):
        # the error reaches the caller, whatever the API.
        more = fill()
        assert length(more) <= 1
        assert Lacca.start("sleep", ["60"]) == {:error, :emfile}
        # run/3 without :input needs fewer descriptors (stdin is /dev/null):
        # use up what is left with processes started that way first.
        lean = fill([], stdin: :null)
        assert Lacca.run("true", []) == {:error, :emfile}
        error = assert_raise Lacca.Error, fn -> Lacca.stream!("true", []) |> Enum.to_list() end
        assert error.reason == :emfile

        # Other errors are not retried, and every resin still serves.
        Enum.each(again ++ more ++ lean, &Lacca.stop/1)
        assert Lacca.start("/nonexistent/program", []) == {:error, :enoent}
        assert {:ok, %Lacca.Result{stdout: "ok\n"}} = Lacca.run("echo", ["ok"])
        assert Enum.map(Daemon.shared(), &Daemon.resin_os_pid/1) == resins
      after
        Enum.each(started, &Lacca.stop/1)
      end
    end

    test "a dedicated resin is not retried elsewhere", %{dir: dir, resin: resin} do
      restart!(resin: script!(dir, "no-fds", "ulimit -n 12\nexec #{resin} \"$@\""))
      assert {:error, :emfile} = Lacca.run("true", [], daemon: :dedicated)
    end
  end

  # Starts `sleep`s until the first error, which must be :emfile.
  defp fill(acc \\ [], opts \\ []) do
    case Lacca.start("sleep", ["60"], opts) do
      {:ok, pid} when length(acc) < 300 -> fill([pid | acc], opts)
      {:error, :emfile} -> acc
    end
  end

  # The OS pid of the resin that runs the process of server `pid`.
  defp parent(pid) do
    stat = File.read!("/proc/#{Lacca.os_pid(pid)}/stat")
    [_, rest] = String.split(stat, ") ", parts: 2)
    rest |> String.split() |> Enum.at(1) |> String.to_integer()
  end
end
