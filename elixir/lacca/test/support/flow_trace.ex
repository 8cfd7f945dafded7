defmodule Lacca.FlowTrace do
  @moduledoc false
  # Waits for a process server's `active: :flow` looks at a behind owner
  # ({:flow_check, _} timer messages), traced with :erlang.trace(pid, true,
  # [:receive]) instead of polling the server's state.

  import ExUnit.Assertions

  @doc """
  Traces the server's receives until it looked at a behind owner `n` times:
  `:held` (credit is withheld). The server ending first (it sent everything)
  is `:ended`, which the caller's assertion then shows. No trace message is
  left in the caller's mailbox either way.
  """
  def await_flow_checks(pid, n, timeout \\ 30_000) do
    ref = Process.monitor(pid)
    :erlang.trace(pid, true, [:receive, {:tracer, self()}])
    result = flow_checks(pid, ref, n, timeout)
    if result == :held, do: untrace(pid)
    Process.demonitor(ref, [:flush])
    flush_trace(pid)
    result
  end

  defp flow_checks(_pid, _ref, 0, _timeout), do: :held

  defp flow_checks(pid, ref, n, timeout) do
    receive do
      {:trace, ^pid, :receive, {:flow_check, _}} -> flow_checks(pid, ref, n - 1, timeout)
      {:DOWN, ^ref, :process, ^pid, _} -> :ended
    after
      timeout -> flunk("credit was never withheld")
    end
  end

  # No trace message after this one.
  defp untrace(pid) do
    :erlang.trace(pid, false, [:receive])
    ref = :erlang.trace_delivered(pid)
    assert_receive {:trace_delivered, ^pid, ^ref}, 5_000
  end

  defp flush_trace(pid) do
    receive do
      {:trace, ^pid, _, _} -> flush_trace(pid)
    after
      0 -> :ok
    end
  end
end
