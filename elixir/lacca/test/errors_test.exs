defmodule Lacca.ErrorsTest do
  # Errors that say why (issue 11, part 6): Lacca.ExitError carries stderr's
  # tail; spawn errors and resin failures have one documented shape.
  use ExUnit.Case, async: true

  doctest Lacca.ExitError

  describe "stream!/3 and stderr's tail" do
    test "ls /nonexistent: the error says why, with stderr not streamed (the default)" do
      error =
        assert_raise Lacca.ExitError, fn ->
          Lacca.stream!("ls", ["/nonexistent"], env: %{"LC_ALL" => "C"}) |> Enum.to_list()
        end

      assert error.status == {:exit, 2}
      assert error.stderr =~ "/nonexistent"

      assert Exception.message(error) =~
               ~r/^"ls" exited with status 2, stderr:\nls: .*\/nonexistent.*No such file/
    end

    test "only the last 4 KiB are kept, in order, across frames" do
      # 200,000 numbered lines on stderr, then a marker: far more than 4 KiB.
      script = "seq 1 200000 >&2; echo last words >&2; exit 7"

      error =
        assert_raise Lacca.ExitError, fn ->
          Lacca.stream!("sh", ["-c", script]) |> Enum.to_list()
        end

      assert byte_size(error.stderr) == 4096
      assert String.ends_with?(error.stderr, "199999\n200000\nlast words\n")
      {:ok, %Lacca.Result{stderr: all}} = Lacca.run("sh", ["-c", script])
      assert error.stderr == binary_part(all, byte_size(all) - 4096, 4096)
      assert Exception.message(error) =~ "the last 4096 bytes of stderr:\n"
      assert Exception.message(error) =~ ~r/last words$/
    end

    test "stderr: :capture streams stderr and keeps its tail too" do
      error =
        assert_raise Lacca.ExitError, fn ->
          Lacca.stream!("sh", ["-c", "echo out; echo err >&2; exit 1"], stderr: :capture)
          |> Enum.each(fn _ -> :ok end)
        end

      assert error.stderr == "err\n"
    end

    test "stderr: :stdout merges it: no separate tail" do
      assert_raise Lacca.ExitError, ~s("sh" exited with status 1), fn ->
        Lacca.stream!("sh", ["-c", "echo err >&2; exit 1"], stderr: :stdout) |> Enum.to_list()
      end
    end

    test "a signal, and an empty stderr: the message has no stderr part" do
      assert_raise Lacca.ExitError, ~s("sh" was killed by signal :sigterm), fn ->
        Lacca.stream!("sh", ["-c", "kill -TERM $$"]) |> Enum.to_list()
      end
    end

    test "stderr that is not text is inspected" do
      error =
        assert_raise Lacca.ExitError, fn ->
          Lacca.stream!("sh", ["-c", "printf '\\377\\376' >&2; exit 1"]) |> Enum.to_list()
        end

      assert Exception.message(error) == ~s("sh" exited with status 1, stderr:\n<<255, 254>>)
    end

    test "stream/3 and a successful stream!/3 are unchanged by the kept stderr" do
      assert Lacca.stream("sh", ["-c", "echo hi; echo err >&2; exit 3"]) |> Enum.to_list() ==
               ["hi\n", {:exit, {:exit, 3}}]

      assert Lacca.stream!("sh", ["-c", "echo hi; echo err >&2"], lines: true) |> Enum.to_list() ==
               ["hi\n"]
    end
  end
end
