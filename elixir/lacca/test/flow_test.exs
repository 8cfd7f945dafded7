defmodule Lacca.FlowTest do
  # output: :messages with the default active: :flow (bounded by the owner's
  # mailbox) and direct delivery (the daemon sends output and the final
  # message straight to the owner).
  use ExUnit.Case, async: true

  import Lacca.FlowTrace

  @mib 1_048_576

  # How long a resin's death may take to reach the owner: the daemon sends
  # the final {:error, :resin_down} after Lacca.Cleanup.kill_all/2, whose
  # /proc scans (a file read per process, each a hop to an I/O thread) took
  # 0.7-2.7 s under two `yes` hogs on 2 cores, and the final message came
  # 0.2-6.4 s after the kill (measured, load 7-9): 5 s was too tight.
  @resin_down_wait 30_000

  # The most output :flow lets into a mailbox nobody reads: 64 queued chunks
  # of at most 64 KiB, then up to :max_buffer (1 MiB) more from the credit
  # resin still had, plus a grant's worth in flight.
  @flow_bound 65 * 65_536 + 2 * @mib

  describe "active: :flow (the default)" do
    test "an owner that does not read holds the process in bounded memory; reading resumes it" do
      total = 40 * @mib
      {:ok, pid} = Lacca.start_link("head", ["-c", "#{total}", "/dev/zero"], output: :messages)

      # The server withholds credit and looks again on a timer: wait for
      # two such looks (the owner is still behind at each).
      assert await_flow_checks(pid, 2, 20_000) == :held

      {held, _chunks} = mailbox_stdout(pid)
      assert held > 0 and held <= @flow_bound
      # head is held: nowhere near done.
      refute_received {:lacca, ^pid, {:exit, _}}
      assert Lacca.alive?(pid)

      # Reading lets it run to its end: every byte, then the exit.
      assert {bytes, {:exit, 0}} = count(pid, 0)
      assert bytes == total
      refute_received {:lacca, ^pid, _}
    end

    test "active: true is unbounded: the whole output waits in the mailbox" do
      total = 16 * @mib

      {:ok, pid} =
        Lacca.start_link("head", ["-c", "#{total}", "/dev/zero"],
          output: :messages,
          active: true
        )

      # The exit comes after the last chunk, with nothing read meanwhile.
      assert_receive {:lacca, ^pid, {:exit, {:exit, 0}}}, 30_000
      {held, _} = mailbox_stdout(pid)
      assert held == total
      assert held > @flow_bound
    end

    test ":flow is a valid :active value" do
      assert_raise ArgumentError, ~r/expected :flow, true, false, :once/, fn ->
        Lacca.start("true", [], output: :messages, active: :sometimes)
      end

      assert_raise ArgumentError, ~r/expected active to be :flow, true/, fn ->
        Lacca.set_active(self(), :sometimes)
      end
    end

    test "set_active(pid, :flow) and back to true" do
      {:ok, pid} = Lacca.start_link("cat", [], output: :messages, active: false)
      assert Lacca.set_active(pid, :flow) == :ok
      assert Lacca.write_stdin(pid, "one\n") == :ok
      assert_receive {:lacca, ^pid, {:stdout, "one\n"}}, 5_000
      assert Lacca.set_active(pid, true) == :ok
      assert Lacca.write_stdin(pid, "two\n") == :ok
      assert_receive {:lacca, ^pid, {:stdout, "two\n"}}, 5_000
      assert Lacca.close_stdin(pid) == :ok
      assert_receive {:lacca, ^pid, {:exit, {:exit, 0}}}, 5_000
    end
  end

  describe "direct delivery" do
    test "every byte comes before the exit, in order, with many processes at once" do
      expected = Enum.map_join(1..60_000, &"#{&1}\n")

      results =
        1..24
        |> Enum.map(fn i ->
          Task.async(fn ->
            # Half of them on stderr (2>&1 is not used: a separate stream).
            {script, stream} =
              if rem(i, 2) == 0, do: {"seq 1 60000", :stdout}, else: {"seq 1 60000 >&2", :stderr}

            {:ok, pid} = Lacca.start("sh", ["-c", script], output: :messages)
            result = collect(pid, stream, [])
            refute_received {:lacca, ^pid, _}
            result
          end)
        end)
        |> Task.await_many(60_000)

      for result <- results, do: assert(result == {expected, {:exit, 0}})
    end

    test "leaving it mid-stream (set_active :once) keeps the order" do
      # 6.9 MB: more than the credit, so the hand-over is mid-stream.
      expected = Enum.map_join(1..1_000_000, &"#{&1}\n")
      {:ok, pid} = Lacca.start_link("seq", ["1", "1000000"], output: :messages)
      assert_receive {:lacca, ^pid, {:stdout, first}}, 5_000
      assert Lacca.set_active(pid, :once) == :ok
      assert once(pid, [first]) == {expected, {:exit, 0}}
    end

    test "exactly one final message when resin dies" do
      {:ok, pid} = Lacca.start("sleep", ["1000"], daemon: :dedicated, output: :messages)
      ref = Process.monitor(pid)
      resin = Lacca.Daemon.resin_os_pid(:sys.get_state(pid).daemon)
      System.cmd("kill", ["-KILL", "#{resin}"])
      assert_receive {:lacca, ^pid, {:error, :resin_down}}, @resin_down_wait
      assert_receive {:DOWN, ^ref, :process, ^pid, _}, 5_000
      refute_received {:lacca, ^pid, _}
    end

    test "a daemon killed outright: the server sends the final message" do
      {:ok, pid} = Lacca.start("sleep", ["1000"], daemon: :dedicated, output: :messages)
      ref = Process.monitor(pid)
      Process.exit(:sys.get_state(pid).daemon, :kill)
      assert_receive {:lacca, ^pid, {:error, :resin_down}}, 5_000
      assert_receive {:DOWN, ^ref, :process, ^pid, _}, 5_000
      refute_received {:lacca, ^pid, _}
    end

    test "an owner that dies stops the process" do
      test = self()

      owner =
        spawn(fn ->
          {:ok, pid} = Lacca.start("yes", [], output: :messages)
          send(test, {:started, pid, Lacca.os_pid(pid)})
          receive do: (:never -> :ok)
        end)

      assert_receive {:started, pid, os_pid}, 5_000
      ref = Process.monitor(pid)
      Process.exit(owner, :kill)
      assert_receive {:DOWN, ^ref, :process, ^pid, _}, 10_000
      # The server stopped it and waited for its exit before it ended.
      refute File.exists?("/proc/#{os_pid}")
    end
  end

  describe "write_stdin" do
    test "many writers at once: each write answered once" do
      {:ok, pid} = Lacca.start_link("cat", [], output: :messages)

      1..8
      |> Enum.map(fn i ->
        Task.async(fn ->
          for _ <- 1..200, do: :ok = Lacca.write_stdin(pid, "#{i}\n")
          # No second answer for any of them.
          {:messages, []} = Process.info(self(), :messages)
          :ok
        end)
      end)
      |> Task.await_many(60_000)

      assert Lacca.close_stdin(pid) == :ok
      assert {bytes, {:exit, 0}} = count(pid, 0)
      assert bytes == 8 * 200 * 2
    end

    test "a write that times out is answered once, with :timeout" do
      {:ok, pid} = Lacca.start("sleep", ["1000"])
      # Fill the stdin pipe (64 KiB): then nothing more can be written.
      assert Lacca.write_stdin(pid, :binary.copy("x", 65_536)) == :ok
      assert Lacca.write_stdin(pid, "z", 100) == {:error, :timeout}
      assert Lacca.kill(pid) == :ok
      assert Lacca.await(pid) == {:ok, {:signal, :sigkill}}
      refute_received _
    end
  end

  defp mailbox_stdout(pid) do
    {:messages, messages} = Process.info(self(), :messages)
    chunks = for {:lacca, ^pid, {:stdout, data}} <- messages, do: byte_size(data)
    {Enum.sum(chunks), length(chunks)}
  end

  defp count(pid, n) do
    receive do
      {:lacca, ^pid, {:stdout, data}} -> count(pid, n + byte_size(data))
      {:lacca, ^pid, {:exit, status}} -> {n, status}
    after
      20_000 -> flunk("no message for 20 s")
    end
  end

  defp collect(pid, stream, acc) do
    receive do
      {:lacca, ^pid, {^stream, data}} -> collect(pid, stream, [acc | data])
      {:lacca, ^pid, {:exit, status}} -> {IO.iodata_to_binary(acc), status}
    after
      30_000 -> flunk("no message for 30 s")
    end
  end

  defp once(pid, acc) do
    receive do
      {:lacca, ^pid, {:stdout, data}} ->
        # {:error, :noproc} once the server ended after the exit message.
        _ = Lacca.set_active(pid, :once)
        once(pid, [acc | data])

      {:lacca, ^pid, {:exit, status}} ->
        {IO.iodata_to_binary(acc), status}
    after
      5_000 -> flunk("no message for 5 s")
    end
  end
end
