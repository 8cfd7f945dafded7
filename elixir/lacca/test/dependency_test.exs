defmodule Lacca.DependencyTest do
  use ExUnit.Case, async: true

  # Builds a throwaway project outside the repository that depends on lacca
  # by path, with its own MIX_HOME and build, and without LACCA_RESIN: lacca
  # must find a resin by itself (the one compiling bundled into its priv/resin,
  # else the repository's .venv).
  @moduletag :external
  @moduletag timeout: 180_000

  @repo Path.expand("../../..", __DIR__)

  test "a project with {:lacca, path: ...} compiles and runs Lacca.run/2" do
    dir = Path.join(System.tmp_dir!(), "lacca-dep-#{System.unique_integer([:positive])}")
    File.mkdir_p!(Path.join(dir, "lib"))

    File.write!(Path.join(dir, "mix.exs"), """
    defmodule LaccaUser.MixProject do
      use Mix.Project

      def project do
        [app: :lacca_user, version: "0.1.0", elixir: "~> 1.14", deps: deps()]
      end

      def application, do: [extra_applications: [:logger]]

      defp deps, do: [{:lacca, path: #{inspect(@repo)}}]
    end
    """)

    File.write!(Path.join(dir, "lib/lacca_user.ex"), """
    defmodule LaccaUser do
      def hi, do: Lacca.run("echo", ["hi"])
    end
    """)

    env = [
      {"MIX_ENV", "dev"},
      {"MIX_HOME", Path.join(dir, ".mix")},
      {"HEX_OFFLINE", "1"},
      {"LACCA_RESIN", nil},
      {"MIX_BUILD_PATH", nil},
      {"MIX_EXS", nil}
    ]

    try do
      {out, status} = System.cmd("mix", ["compile"], cd: dir, env: env, stderr_to_stdout: true)

      assert status == 0, out

      {out, status} =
        System.cmd("mix", ["run", "-e", "IO.inspect(LaccaUser.hi())"],
          cd: dir,
          env: env,
          stderr_to_stdout: true
        )

      assert status == 0, out

      assert out =~
               ~S({:ok, %Lacca.Result{stdout: "hi\n", stderr: "", status: {:exit, 0}}})
    after
      File.rm_rf!(dir)
    end
  end
end
