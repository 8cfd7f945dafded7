defmodule Lacca.AppEnv do
  @moduledoc false
  # For tests that restart the :lacca application with other settings (not
  # async): the settings come back, and :lacca runs again, after each test.

  import ExUnit.Callbacks, only: [on_exit: 1]

  # Saves `keys` of lacca's environment and makes a scratch directory; after
  # the test runs `cleanup.(dir)`, restores the keys and starts :lacca again.
  # Returns the test context: the directory and the resin lacca finds.
  @spec isolate(atom(), [atom()], (Path.t() -> any())) :: %{dir: Path.t(), resin: Path.t()}
  def isolate(label, keys, cleanup \\ fn _dir -> :ok end) do
    saved = for key <- keys, do: {key, Application.fetch_env(:lacca, key)}
    dir = Path.join(System.tmp_dir!(), "lacca-#{label}-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)

    on_exit(fn ->
      _ = Application.stop(:lacca)
      _ = cleanup.(dir)
      put_back(saved)
      {:ok, _} = Application.ensure_all_started(:lacca)
      File.rm_rf!(dir)
    end)

    {:ok, resin} = Lacca.Resin.find()
    %{dir: dir, resin: resin}
  end

  # Saves `keys` of lacca's environment; they come back after the test (for
  # settings read at each call, no restart needed).
  @spec restore_after([atom()]) :: :ok
  def restore_after(keys) do
    saved = for key <- keys, do: {key, Application.fetch_env(:lacca, key)}
    on_exit(fn -> put_back(saved) end)
  end

  defp put_back(saved) do
    for {key, value} <- saved do
      case value do
        {:ok, v} -> Application.put_env(:lacca, key, v)
        :error -> Application.delete_env(:lacca, key)
      end
    end

    :ok
  end

  # Restarts :lacca with `env` put into its environment.
  @spec restart!(keyword()) :: {:ok, [atom()]}
  def restart!(env) do
    :ok = Application.stop(:lacca)
    Enum.each(env, fn {key, value} -> Application.put_env(:lacca, key, value) end)
    {:ok, _} = Application.ensure_all_started(:lacca)
  end

  # An executable script `name` in `dir`.
  @spec script!(Path.t(), String.t(), String.t(), String.t()) :: Path.t()
  def script!(dir, name, shebang \\ "#!/bin/sh", body) do
    path = Path.join(dir, name)
    File.write!(path, shebang <> "\n" <> body <> "\n")
    File.chmod!(path, 0o755)
    path
  end
end
