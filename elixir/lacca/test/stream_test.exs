defmodule Lacca.StreamTest do
  use ExUnit.Case, async: true

  import Lacca.OSHelpers

  test "streams stdout lazily, in order, binary safe" do
    data = :crypto.strong_rand_bytes(300_000)
    path = Path.join(System.tmp_dir!(), "lacca-stream-#{System.unique_integer([:positive])}")
    File.write!(path, data)

    try do
      stream = Lacca.stream!("cat", [path])
      assert Enum.join(stream) == data
      # A stream can be run again: it starts the process again.
      assert Enum.join(stream) == data
    after
      File.rm(path)
    end

    refute_received {:lacca, _, _}
  end

  test "halting early stops the process, and no messages are left behind" do
    stream = Lacca.stream!("sh", ["-c", "echo $$; exec yes"])
    [first | _] = Enum.take(stream, 2)
    [os_pid | _] = String.split(first, "\n")
    assert wait_gone(String.to_integer(os_pid)) == []
    refute_received {:lacca, _, _}
  end

  test "lines: true emits lines" do
    assert Lacca.stream!("printf", ["a\\nbb\\n\\nccc"], lines: true) |> Enum.to_list() ==
             ["a\n", "bb\n", "\n", "ccc"]

    assert Lacca.stream!("yes", [], lines: true) |> Enum.take(3) == ["y\n", "y\n", "y\n"]

    # Lines longer than a chunk.
    long = :binary.copy("x", 200_000)

    assert Lacca.stream!("sh", ["-c", "head -c 200000 /dev/zero | tr '\\0' x; echo; echo ab"],
             lines: true
           )
           |> Enum.to_list() == [long <> "\n", "ab\n"]

    assert_raise ArgumentError, ~r/:lines option/, fn -> Lacca.stream!("true", [], lines: 1) end
  end

  test "stderr is discarded unless asked for" do
    assert Lacca.stream!("sh", ["-c", "echo out; echo err >&2"]) |> Enum.join() == "out\n"

    assert Lacca.stream!("sh", ["-c", "echo out; echo err >&2"], stderr: :stdout)
           |> Enum.join() == "out\nerr\n"
  end

  test "a command that cannot run raises Lacca.Error" do
    assert_raise Lacca.Error, ~r/cannot run "lacca-no-such-command": :enoent/, fn ->
      Lacca.stream!("lacca-no-such-command", []) |> Enum.to_list()
    end
  end

  test "options are validated when the stream is built" do
    assert_raise ArgumentError, ~r/unknown keys \[:output\]/, fn ->
      Lacca.stream!("true", [], output: :buffer)
    end
  end
end
