defmodule Lacca.MixProject do
  use Mix.Project

  @version "0.4.0"

  def project do
    [
      app: :lacca,
      version: @version,
      elixir: "~> 1.14",
      elixirc_paths: elixirc_paths(Mix.env()),
      test_paths: ["elixir/lacca/test"],
      start_permanent: Mix.env() == :prod,
      # :resin bundles resin into priv/resin (Mix.Tasks.Compile.Resin below).
      compilers: Mix.compilers() ++ [:resin],
      deps: [],
      docs: [main: "Lacca"]
    ]
  end

  def application do
    [extra_applications: [:logger], mod: {Lacca.Application, []}]
  end

  defp elixirc_paths(:test), do: ["elixir/lacca/lib", "elixir/lacca/test/support"]
  defp elixirc_paths(_), do: ["elixir/lacca/lib"]
end

defmodule Mix.Tasks.Compile.Resin do
  @shortdoc "Bundles resin into lacca's priv/resin (for releases)"
  @moduledoc """
  Copies resin_py and msgpack, byte-compiled, into `priv/resin` of the lacca
  application in `_build`, with the launcher `priv/resin/resind` that
  `Lacca.Resin` looks for first: a release (`mix release`) then carries its
  resin and needs only a `python3` of the same minor version on the target.

  The bundle is made by `python -m resin_py.launcher --bundle DIR`, run by the
  interpreter named by `LACCA_PYTHON`, else the `.venv/bin/python` that `make
  setup` created in the lacca checkout, else `python3`. It is made again only
  when resin_py's files or that interpreter change (a hash in
  `priv/resin/.stamp`). Without a usable Python, compiling goes on with a
  note (and without a launcher in `priv/resin`: a stale bundle is not used),
  and lacca finds resin as before. `LACCA_BUNDLE=0` leaves `priv/resin` out.
  """
  use Mix.Task.Compiler

  @repo __DIR__
  # Bump when the bundle's layout changes, so that every stamp is stale.
  @format 1

  @impl true
  def run(args) do
    dest = Path.join(Mix.Project.app_path(), "priv/resin")

    cond do
      System.get_env("LACCA_BUNDLE") in ["0", "false"] ->
        File.rm_rf!(dest)
        {:noop, []}

      python = python() ->
        stamp = stamp(python)
        stamp_path = Path.join(dest, ".stamp")

        if "--force" not in args and File.read(stamp_path) == {:ok, stamp} and
             File.exists?(launcher(dest)) do
          {:noop, []}
        else
          bundle(python, dest, stamp_path, stamp)
        end

      true ->
        skip(dest, "no python3 found (set LACCA_PYTHON)")
    end
  end

  @impl true
  def clean do
    File.rm_rf(Path.join(Mix.Project.app_path(), "priv/resin"))
    :ok
  end

  defp launcher(dest), do: Path.join(dest, "resind")

  defp bundle(python, dest, stamp_path, stamp) do
    env = [{"PYTHONPATH", @repo}]
    args = ["-m", "resin_py.launcher", "--bundle", dest]

    case System.cmd(python, args, cd: @repo, env: env, stderr_to_stdout: true) do
      {_, 0} ->
        File.write!(stamp_path, stamp)
        {:ok, []}

      {out, status} ->
        skip(dest, "#{python} -m resin_py.launcher exited with #{status}: #{String.trim(out)}")
    end
  rescue
    e in ErlangError -> skip(dest, "cannot run #{python}: #{inspect(e.original)}")
  end

  # A bundle that could not be made again is stale: lacca must not use it.
  defp skip(dest, why) do
    File.rm(launcher(dest))

    Mix.shell().info(
      "lacca: resin is not bundled into priv/resin, #{why}. A release will need " <>
        "LACCA_RESIN, config :lacca, :resin or a resin on the PATH (see Lacca.Resin)."
    )

    {:noop, []}
  end

  defp python do
    venv = Path.join(@repo, ".venv/bin/python")

    cond do
      (env = System.get_env("LACCA_PYTHON")) not in [nil, ""] -> env
      File.exists?(venv) -> venv
      true -> System.find_executable("python3")
    end
  end

  # What the bundle is made of (mtimes and sizes): resin_py's files, the
  # interpreter and what it has installed (the venv's install stamp).
  defp stamp(python) do
    files =
      Path.wildcard(Path.join(@repo, "resin_py/**/*.{py,pyi,so,c,md,typed}"))
      |> Enum.reject(&String.contains?(&1, "__pycache__"))
      |> Enum.sort()

    installed = Path.join(@repo, ".venv/.installed")

    [@format, python | Enum.map([python, installed | files], &{&1, version(&1)})]
    |> :erlang.term_to_binary()
    |> :erlang.md5()
    |> Base.encode16(case: :lower)
  end

  defp version(path) do
    case File.stat(path, time: :posix) do
      {:ok, %File.Stat{mtime: mtime, size: size}} -> {mtime, size}
      {:error, _} -> nil
    end
  end
end
