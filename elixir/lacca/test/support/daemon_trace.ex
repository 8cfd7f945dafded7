defmodule Lacca.DaemonTrace do
  @moduledoc false
  # Watches what resin tells a daemon, through :erlang.trace(daemon, true,
  # [:receive]) set up by the test, instead of polling the daemon's state.

  import ExUnit.Assertions

  @doc "Waits for resin's report that process `id` was killed by SIGKILL."
  def assert_exit_reported(daemon, id) do
    receive do
      {:trace, ^daemon, :receive, {_port, {:data, <<0x20, etf::binary>>}}} ->
        case :erlang.binary_to_term(etf) do
          {:exit, ^id, {:signal, 9}} -> :ok
          _ -> assert_exit_reported(daemon, id)
        end

      {:trace, ^daemon, :receive, _} ->
        assert_exit_reported(daemon, id)
    after
      5_000 -> flunk("resin did not report the exit of id #{id}")
    end
  end
end
