defmodule Lacca.ScriptTest do
  use ExUnit.Case, async: true

  @repo Path.expand("../../..", __DIR__)

  # The example of lacca 0.2.3's README, verbatim.
  @readme """
  {:ok, pid} = Lacca.start "echo", ["hello, world."]
  Lacca.read_stdout pid
  # {:ok, "hello, world.\\n"}
  Lacca.stop pid
  """

  @tag timeout: 120_000
  test "the README example works as a script run with mix run" do
    dir = Path.join(System.tmp_dir!(), "lacca-readme-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    script = Path.join(dir, "readme.exs")
    File.write!(script, @readme)

    # Run it as it is, then once more line by line as iex would, printing
    # every result.
    code = """
    Code.require_file(#{inspect(script)})

    #{inspect(script)}
    |> File.read!()
    |> String.split("\\n", trim: true)
    |> Enum.reject(&String.starts_with?(&1, "#"))
    |> Enum.reduce([], fn line, binding ->
      {result, binding} = Code.eval_string(line, binding)
      IO.inspect(result)
      binding
    end)
    """

    try do
      {out, status} =
        System.cmd("mix", ["run", "--no-compile", "--no-deps-check", "-e", code],
          cd: @repo,
          env: [{"MIX_ENV", "test"}],
          stderr_to_stdout: true
        )

      assert status == 0, out
      assert [_ok_pid, ~S({:ok, "hello, world.\n"}), ":ok"] = String.split(out, "\n", trim: true)
    after
      File.rm_rf!(dir)
    end
  end
end
