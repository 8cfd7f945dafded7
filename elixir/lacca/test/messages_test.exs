defmodule Lacca.MessagesTest do
  use ExUnit.Case, async: true

  import Lacca.OSHelpers, only: [held_binary_bytes: 1]

  test "stdout, stderr, then exactly one exit message; the server ends" do
    {:ok, pid} = Lacca.start("sh", ["-c", "echo out; echo err >&2; exit 2"], output: :messages)

    ref = Process.monitor(pid)
    assert_receive {:lacca, ^pid, {:stdout, "out\n"}}, 5_000
    assert_receive {:lacca, ^pid, {:stderr, "err\n"}}, 5_000
    assert_receive {:lacca, ^pid, {:exit, {:exit, 2}}}, 5_000
    # (:noproc when the server ended before it was monitored)
    assert_receive {:DOWN, ^ref, :process, ^pid, reason}
                   when reason in [{:exit_status, 2}, :noproc],
                   5_000

    refute_received {:lacca, ^pid, _}
    assert Lacca.await(pid) == {:error, :noproc}
    refute Lacca.alive?(pid)
  end

  test "messages go to :owner" do
    test = self()

    owner =
      spawn_link(fn ->
        receive do
          {:lacca, _, {:stdout, data}} -> send(test, {:owner_got, data})
        end

        receive do
          {:lacca, _, {:exit, status}} -> send(test, {:owner_exit, status})
        end
      end)

    {:ok, _pid} = Lacca.start("echo", ["to owner"], output: :messages, owner: owner)
    assert_receive {:owner_got, "to owner\n"}, 5_000
    assert_receive {:owner_exit, {:exit, 0}}, 5_000
  end

  test "binary data arrives unchanged, in order" do
    data = :crypto.strong_rand_bytes(500_000) <> <<0, 255, 128>>
    {:ok, pid} = Lacca.start_link("cat", [], output: :messages)
    assert Lacca.write_stdin(pid, data) == :ok
    assert Lacca.close_stdin(pid) == :ok
    assert collect(pid, []) == {data, {:exit, 0}}
  end

  test "active: false, :once, n and true" do
    {:ok, pid} = Lacca.start_link("cat", [], output: :messages, active: false)

    assert Lacca.write_stdin(pid, "a") == :ok
    assert Lacca.set_active(pid, :once) == :ok
    assert_receive {:lacca, ^pid, {:stdout, "a"}}, 5_000

    # Passive again: "b" is held back (cat echoes it whenever it likes).
    assert Lacca.write_stdin(pid, "b") == :ok
    refute_receive {:lacca, ^pid, {:stdout, _}}, 100

    assert Lacca.set_active(pid, 2) == :ok
    assert_receive {:lacca, ^pid, {:stdout, "b"}}, 5_000
    assert Lacca.write_stdin(pid, "c") == :ok
    assert_receive {:lacca, ^pid, {:stdout, "c"}}, 5_000
    assert_receive {:lacca, ^pid, :passive}

    assert Lacca.write_stdin(pid, "d") == :ok
    refute_receive {:lacca, ^pid, {:stdout, _}}, 100
    assert Lacca.set_active(pid, true) == :ok
    assert_receive {:lacca, ^pid, {:stdout, "d"}}, 5_000
    assert Lacca.write_stdin(pid, "e") == :ok
    assert_receive {:lacca, ^pid, {:stdout, "e"}}, 5_000

    assert Lacca.close_stdin(pid) == :ok
    assert_receive {:lacca, ^pid, {:exit, {:exit, 0}}}, 5_000
  end

  test "active n counts are added, as in :gen_tcp" do
    {:ok, pid} = Lacca.start_link("cat", [], output: :messages, active: 1)
    assert Lacca.set_active(pid, 1) == :ok
    assert Lacca.write_stdin(pid, "x") == :ok
    assert_receive {:lacca, ^pid, {:stdout, "x"}}, 5_000
    assert Lacca.write_stdin(pid, "y") == :ok
    assert_receive {:lacca, ^pid, {:stdout, "y"}}, 5_000
    assert_receive {:lacca, ^pid, :passive}
    assert Lacca.stop(pid) == :ok
  end

  test "active: n against a fast producer: n chunks, :passive, then nothing and no credit" do
    {:ok, pid} =
      Lacca.start_link("head", ["-c", "4000000", "/dev/zero"],
        output: :messages,
        active: 3,
        max_buffer: 65_536
      )

    first =
      for _ <- 1..3 do
        assert_receive {:lacca, ^pid, {:stdout, chunk}}, 5_000
        byte_size(chunk)
      end

    assert_receive {:lacca, ^pid, :passive}, 5_000
    refute_receive {:lacca, ^pid, _}, 100

    # resin got no credit beyond :max_buffer: that much waits, head blocks.
    assert held_binary_bytes(pid) <= 65_536 + 8_192

    assert Lacca.alive?(pid)

    assert Lacca.set_active(pid, true) == :ok
    assert {data, {:exit, 0}} = collect(pid, [])
    assert byte_size(data) + Enum.sum(first) == 4_000_000
  end

  test "stop/1 is not held back by output a passive owner does not take" do
    {:ok, pid} = Lacca.start_link("yes", [], output: :messages, active: false, max_buffer: 1_024)
    assert Lacca.stop(pid) == :ok
    assert_receive {:lacca, ^pid, {:exit, {:signal, :sigterm}}}

    # Ignores the stop signal and keeps writing: SIGKILL after :kill_timeout.
    script = "trap '' TERM; echo ready; exec yes"

    {:ok, pid} =
      Lacca.start_link("sh", ["-c", script],
        output: :messages,
        active: false,
        max_buffer: 1_024,
        kill_timeout: 100
      )

    # The trap is set once "ready" is out.
    assert Lacca.set_active(pid, :once) == :ok
    assert_receive {:lacca, ^pid, {:stdout, "ready\n" <> _}}, 5_000
    assert Lacca.stop(pid) == :ok
    assert_receive {:lacca, ^pid, {:exit, {:signal, :sigkill}}}
  end

  test "the exit message waits for the output held back" do
    {:ok, pid} = Lacca.start_link("echo", ["held"], output: :messages, active: false)
    assert Lacca.await(pid) == {:ok, {:exit, 0}}
    refute_received {:lacca, ^pid, _}
    assert Lacca.set_active(pid, :once) == :ok
    assert_receive {:lacca, ^pid, {:stdout, "held\n"}}
    assert_receive {:lacca, ^pid, {:exit, {:exit, 0}}}
  end

  test "a passive owner gets no more output than :max_buffer (the child blocks)" do
    {:ok, pid} =
      Lacca.start_link("head", ["-c", "400000", "/dev/zero"],
        output: :messages,
        active: false,
        max_buffer: 16_384
      )

    assert Lacca.await(pid, 200) == {:error, :timeout}
    assert held_binary_bytes(pid) <= 16_384 + 8_192

    assert Lacca.set_active(pid, true) == :ok
    assert {data, {:exit, 0}} = collect(pid, [])
    assert byte_size(data) == 400_000
  end

  test "set_active and read_stdout are for their own mode" do
    {:ok, pid} = Lacca.start_link("sleep", ["100"])
    assert_raise ArgumentError, ~r/output: :messages/, fn -> Lacca.set_active(pid, true) end
    Lacca.stop(pid)

    {:ok, pid} = Lacca.start_link("sleep", ["100"], output: :messages)
    assert_raise ArgumentError, ~r/output: :buffer/, fn -> Lacca.read_stdout(pid) end
    Lacca.stop(pid)
  end

  defp collect(pid, acc), do: Lacca.Messages.collect(pid, acc, 5_000)
end
