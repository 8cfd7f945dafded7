defmodule Lacca.StreamTest do
  use ExUnit.Case, async: true

  import Lacca.OSHelpers

  # Tags: :heavy - gigabyte-sized transfers; `mix test --exclude heavy` while iterating.

  @max_data 65_530

  defp tmp_file(data) do
    path = Path.join(System.tmp_dir!(), "lacca-stream-#{System.unique_integer([:positive])}")
    File.write!(path, data)
    on_exit(fn -> File.rm(path) end)
    path
  end

  # Nothing about a finished stream may be left in the consumer's mailbox.
  defp refute_leftovers do
    refute_received {:"$lacca", _, _}
    refute_received {:"$lacca_event", _, _}
    refute_received {:"$lacca_input", _, _, _, _}
    refute_received {:lacca, _, _}
  end

  # After a stream ended: the OS process is gone (resin reaps it before it
  # reports the exit, and the stream waits for that report) and the daemon
  # freed its id.
  defp assert_freed({daemon, id, os_pid}) do
    refute os_alive?(os_pid)
    refute daemon_has?(daemon, id)
  end

  describe "output" do
    test "stdout lazily, in order, binary safe; each enumeration runs the process again" do
      data = :crypto.strong_rand_bytes(300_000) <> <<0, 255, 10, 13>>
      stream = Lacca.stream!("cat", [tmp_file(data)])
      assert Enum.join(stream) == data
      assert Enum.join(stream) == data
      refute_leftovers()
    end

    test "chunks are binaries of at most 65,530 bytes, and of at most :max_buffer" do
      chunks = Lacca.stream!("head", ["-c", "1000000", "/dev/zero"]) |> Enum.to_list()
      assert Enum.all?(chunks, &(is_binary(&1) and byte_size(&1) in 1..@max_data))
      assert chunks |> Enum.map(&byte_size/1) |> Enum.sum() == 1_000_000

      chunks =
        Lacca.stream!("head", ["-c", "100000", "/dev/zero"], max_buffer: 1_024) |> Enum.to_list()

      assert Enum.all?(chunks, &(byte_size(&1) <= 1_024))
      assert chunks |> Enum.map(&byte_size/1) |> Enum.sum() == 100_000
    end

    @tag :heavy
    @tag timeout: 120_000
    test "1 GiB from head, counted to the byte" do
      gib = 1_073_741_824

      count =
        Lacca.stream!("head", ["-c", Integer.to_string(gib), "/dev/zero"])
        |> Enum.reduce(0, &(&2 + byte_size(&1)))

      assert count == gib
    end

    test "stderr: discarded by default, merged with :stdout, tagged with :capture" do
      script = "echo out; echo err >&2"
      assert Lacca.stream!("sh", ["-c", script]) |> Enum.join() == "out\n"

      assert Lacca.stream!("sh", ["-c", script <> "; echo out2"], stderr: :stdout)
             |> Enum.join() == "out\nerr\nout2\n"

      script = "echo out; echo err >&2; echo out2; printf 'err2\\nerr3' >&2"
      elements = Lacca.stream!("sh", ["-c", script], stderr: :capture) |> Enum.to_list()

      assert Enum.all?(
               elements,
               &match?({stream, data} when stream in [:stdout, :stderr] and is_binary(data), &1)
             )

      assert for({:stdout, d} <- elements, into: "", do: d) == "out\nout2\n"
      assert for({:stderr, d} <- elements, into: "", do: d) == "err\nerr2\nerr3"

      lines = Lacca.stream!("sh", ["-c", script], stderr: :capture, lines: true) |> Enum.to_list()
      assert for({:stdout, l} <- lines, do: l) == ["out\n", "out2\n"]
      assert for({:stderr, l} <- lines, do: l) == ["err\n", "err2\n", "err3"]
    end

    test "daemon: :dedicated" do
      assert Lacca.stream!("echo", ["alone"], daemon: :dedicated) |> Enum.join() == "alone\n"
      assert Lacca.stream!("yes", [], daemon: :dedicated) |> Enum.take(2) |> length() == 2
    end
  end

  describe "exit status" do
    test "stream!/3 raises Lacca.ExitError with the status once the output is consumed" do
      me = self()
      stream = Lacca.stream!("sh", ["-c", "echo before; exit 3"])

      error =
        assert_raise Lacca.ExitError, ~s("sh" exited with status 3), fn ->
          Enum.each(stream, &send(me, {:got, &1}))
        end

      assert %Lacca.ExitError{status: {:exit, 3}, command: "sh", args: ["-c", _]} = error
      assert_received {:got, "before\n"}

      error =
        assert_raise Lacca.ExitError, ~r/killed by signal :sigterm/, fn ->
          Lacca.stream!("sh", ["-c", "kill -TERM $$"]) |> Enum.to_list()
        end

      assert error.status == {:signal, :sigterm}
      refute_leftovers()
    end

    test "stream/3 ends with {:exit, status} instead" do
      assert Lacca.stream("sh", ["-c", "echo a; exit 3"]) |> Enum.to_list() ==
               ["a\n", {:exit, {:exit, 3}}]

      assert Lacca.stream("sh", ["-c", "kill -KILL $$"]) |> Enum.to_list() ==
               [{:exit, {:signal, :sigkill}}]

      assert Lacca.stream("printf", ["a\\nb"], lines: true) |> Enum.to_list() ==
               ["a\n", "b", {:exit, {:exit, 0}}]

      # Halted early: no status.
      assert Lacca.stream("yes", []) |> Enum.take(1) |> length() == 1
      refute_leftovers()
    end

    test "a command that cannot run raises Lacca.Error" do
      for fun <- [&Lacca.stream!/3, &Lacca.stream/3] do
        assert_raise Lacca.Error, ~r/cannot run "lacca-no-such-command": :enoent/, fn ->
          fun.("lacca-no-such-command", [], []) |> Enum.to_list()
        end

        assert_raise Lacca.Error, ~r/\{:cwd, :enoent\}/, fn ->
          fun.("true", [], cd: "/nonexistent/dir") |> Enum.to_list()
        end
      end
    end
  end

  describe "halting" do
    test "Enum.take/2 on yes returns, and yes is gone (checked by pid), its id freed" do
      assert Lacca.stream!("yes", []) |> tap_proc() |> Enum.take(3) |> length() == 3
      assert_received {:stream_proc, proc}
      assert_freed(proc)
      refute_leftovers()

      assert Lacca.stream!("yes", [], lines: true) |> Enum.take(3) == ["y\n", "y\n", "y\n"]
    end

    test "Stream.take_while/2 halts it too" do
      assert Lacca.stream!("yes", [], lines: true)
             |> tap_proc()
             |> Stream.with_index()
             |> Stream.take_while(fn {_, i} -> i < 5 end)
             |> Enum.count() == 5

      assert_received {:stream_proc, proc}
      assert_freed(proc)
      refute_leftovers()
    end

    test "an exception in the consumer stops the process" do
      assert_raise RuntimeError, "consumer failed", fn ->
        Lacca.stream!("yes", []) |> tap_proc() |> Enum.each(fn _ -> raise "consumer failed" end)
      end

      assert_received {:stream_proc, proc}
      assert_freed(proc)
      refute_leftovers()
    end

    test "a process that ignores the stop signal is killed after :kill_timeout" do
      script = "trap '' TERM; echo ready; while :; do echo spam; done"

      assert Lacca.stream!("sh", ["-c", script], kill_timeout: 100, lines: true)
             |> tap_proc()
             |> Enum.take(1) == ["ready\n"]

      assert_received {:stream_proc, proc}
      assert_freed(proc)
      refute_leftovers()
    end

    test "the whole process group is stopped" do
      script = "sleep 1000 & echo $!; exec yes"
      [line | _] = Lacca.stream!("sh", ["-c", script], lines: true) |> Enum.take(1)
      assert wait_gone(String.to_integer(String.trim(line))) == []
    end
  end

  describe "input" do
    @tag :heavy
    test "64 MiB of random bytes through cat, from a Stream, SHA-256 equal" do
      size = 64 * 1_048_576
      data = :crypto.strong_rand_bytes(size)

      # Pieces of varying sizes, some bigger than a frame.
      input =
        Stream.unfold(0, fn
          ^size ->
            nil

          pos ->
            n = min(rem(pos * 7_919, 200_003) + 1, size - pos)
            {binary_part(data, pos, n), pos + n}
        end)

      hash =
        Lacca.stream!("cat", [], input: input)
        |> Enum.reduce(:crypto.hash_init(:sha256), &:crypto.hash_update(&2, &1))
        |> :crypto.hash_final()

      assert hash == :crypto.hash(:sha256, data)
    end

    test "binary, iodata, lists and enumerables of iodata" do
      assert Lacca.stream!("cat", [], input: "bin") |> Enum.join() == "bin"
      assert Lacca.stream!("cat", [], input: ["io", ?d, ["ata"]]) |> Enum.join() == "iodata"
      assert Lacca.stream!("cat", [], input: ~w(a b c)) |> Enum.join() == "abc"

      assert Lacca.stream!("cat", [], input: 1..3 |> Stream.map(&"#{&1},")) |> Enum.join() ==
               "1,2,3,"

      assert Lacca.stream!("cat", [], input: Stream.map(1..3, &[&1 + ?0])) |> Enum.join() == "123"
      assert Lacca.stream!("cat", [], input: "") |> Enum.join() == ""
      assert Lacca.stream!("cat", [], input: []) |> Enum.join() == ""
      # Without :input stdin is /dev/null; with stdin: :pipe an empty pipe.
      assert Lacca.stream!("cat", []) |> Enum.join() == ""

      assert Lacca.stream!("sh", ["-c", "test -p /dev/stdin && cat && echo pipe"], stdin: :pipe)
             |> Enum.join() == "pipe\n"
    end

    test "input and output flow concurrently (the output is read while input is written)" do
      # 8 MiB through cat, whose output pipe fills long before the input ends.
      input = Stream.repeatedly(fn -> :binary.copy("z", 65_536) end) |> Stream.take(128)
      count = Lacca.stream!("cat", [], input: input) |> Enum.reduce(0, &(&2 + byte_size(&1)))
      assert count == 128 * 65_536
    end

    test "an interactive exchange: each element is written at once" do
      # The input (enumerated by the writer process) waits until the
      # consumer saw each line come back before it yields the next one.
      lines =
        Lacca.stream!("cat", [],
          input: handshake_input(["line 1\n", "line 2\n", "line 3\n"]),
          lines: true
        )
        |> handshake_consumer()
        |> Enum.to_list()

      assert lines == ["line 1\n", "line 2\n", "line 3\n"]
    end

    test "EPIPE: a process that exits before reading all its input ends cleanly" do
      infinite = Stream.repeatedly(fn -> "x" end)
      assert Lacca.stream!("head", ["-c", "10"], input: infinite) |> Enum.join() == "xxxxxxxxxx"

      big = Stream.repeatedly(fn -> :binary.copy("y", 100_000) end)
      assert Lacca.stream!("head", ["-c", "5"], input: big) |> Enum.join() == "yyyyy"

      assert Lacca.stream!("true", [], input: infinite) |> Enum.to_list() == []

      assert Lacca.stream("sh", ["-c", "exec 0<&-; echo closed"], input: infinite)
             |> Enum.to_list() ==
               ["closed\n", {:exit, {:exit, 0}}]

      refute_leftovers()
    end

    test "a process that does not read its input is not flooded, and halts" do
      input = Stream.repeatedly(fn -> :binary.copy("y", 65_530) end)

      assert Lacca.stream!("sh", ["-c", "echo not reading; exec sleep 100"], input: input)
             |> tap_proc()
             |> Enum.take(1) == ["not reading\n"]

      assert_received {:stream_proc, proc}
      assert_freed(proc)
    end

    test "an exception in the input stops the process and is raised in the consumer" do
      # It raises once the consumer saw the first line.
      input = handshake_input(["a\n", :raise])

      assert_raise RuntimeError, "input failed", fn ->
        Lacca.stream!("sh", ["-c", "cat; exec sleep 100"], input: input, lines: true)
        |> tap_proc()
        |> handshake_consumer()
        |> Enum.to_list()
      end

      assert_received {:stream_proc, proc}
      assert_freed(proc)

      assert_raise ArgumentError, ~r/must emit iodata/, fn ->
        Lacca.stream!("cat", [], input: [:not_iodata]) |> Enum.to_list()
      end

      refute_leftovers()
    end
  end

  describe "lines" do
    test "lines: true and a last line without newline" do
      assert Lacca.stream!("printf", ["a\\nbb\\n\\nccc"], lines: true) |> Enum.to_list() ==
               ["a\n", "bb\n", "\n", "ccc"]

      assert Lacca.stream!("printf", ["a\\n"], lines: true) |> Enum.to_list() == ["a\n"]
      assert Lacca.stream!("true", [], lines: true) |> Enum.to_list() == []
    end

    test "lines straddling the 65,530-byte frame boundaries come out whole" do
      # Line lengths (newline included) around multiples of the frame size.
      lengths =
        [1, @max_data - 1, @max_data, @max_data + 1, 2, 2 * @max_data + 3, 1, 1, 3 * @max_data] ++
          Enum.map(1..200, &(rem(&1 * 7_919, 150_000) + 1)) ++ [200_000]

      lines =
        for {n, i} <- Enum.with_index(lengths),
            do: :binary.copy(<<?a + rem(i, 26)>>, n - 1) <> "\n"

      data = IO.iodata_to_binary(lines) <> "no newline at the end"
      path = tmp_file(data)

      assert Lacca.stream!("cat", [path], lines: true) |> Enum.to_list() ==
               lines ++ ["no newline at the end"]

      # With a maximum: over-long lines come in pieces of exactly `max` bytes.
      for max <- [1_000, @max_data, 100_001] do
        expected = Enum.flat_map(lines ++ ["no newline at the end"], &pieces(&1, max))
        assert Lacca.stream!("cat", [path], lines: max) |> Enum.to_list() == expected
      end
    end

    test "a line of exactly `max` bytes is one element; one byte more is two" do
      assert Lacca.stream!("printf", ["abc\\nabcd\\nabcdefgh"], lines: 4) |> Enum.to_list() ==
               ["abc\n", "abcd", "\n", "abcd", "efgh"]
    end
  end

  describe "options" do
    test "are validated when the stream is built" do
      assert_raise ArgumentError, ~r/unknown keys \[:output\]/, fn ->
        Lacca.stream!("true", [], output: :buffer)
      end

      assert_raise ArgumentError, ~r/:lines option/, fn -> Lacca.stream!("true", [], lines: 0) end
      assert_raise ArgumentError, ~r/:lines option/, fn -> Lacca.stream("true", [], lines: :x) end

      assert_raise ArgumentError, ~r/:input option/, fn ->
        Lacca.stream!("true", [], input: :x)
      end

      assert_raise ArgumentError, ~r/stdin: :null/, fn ->
        Lacca.stream!("true", [], input: "x", stdin: :null)
      end

      assert_raise ArgumentError, ~r/:max_buffer/, fn ->
        Lacca.stream!("true", [], max_buffer: 0)
      end

      assert_raise ArgumentError, ~r/command/, fn -> Lacca.stream!("", []) end
    end
  end

  # An input that yields `elements` one by one, each (after the first) only
  # when the consumer (handshake_consumer/1) saw an element come back. The
  # atom :raise raises instead.
  defp handshake_input(elements) do
    me = self()

    Stream.transform(elements, true, fn element, first? ->
      if first? do
        send(me, {:writer, self()})
      else
        receive do
          :echoed -> :ok
        after
          5_000 -> raise "the consumer did not see the last element"
        end
      end

      if element == :raise, do: raise("input failed")
      {[element], false}
    end)
  end

  defp handshake_consumer(stream) do
    Stream.transform(stream, nil, fn element, writer ->
      writer =
        writer ||
          receive do
            {:writer, writer} -> writer
          after
            5_000 -> flunk("the input was not enumerated")
          end

      send(writer, :echoed)
      {[element], writer}
    end)
  end

  defp pieces(line, max) when byte_size(line) <= max, do: [line]

  defp pieces(line, max) do
    <<piece::binary-size(max), rest::binary>> = line
    [piece | pieces(rest, max)]
  end
end
