defmodule Lacca.Messages do
  @moduledoc false
  # The owner's side of `output: :messages` in tests.

  import ExUnit.Assertions, only: [flunk: 1]

  @doc """
  Receives `pid`'s stdout messages until its exit, which must come last:
  `{stdout, status}`, `acc` (iodata) first. Fails if `timeout` ms pass
  without a message.
  """
  def collect(pid, acc \\ [], timeout) do
    receive do
      {:lacca, ^pid, {:stdout, data}} -> collect(pid, [acc | data], timeout)
      {:lacca, ^pid, {:exit, status}} -> {IO.iodata_to_binary(acc), status}
    after
      timeout -> flunk("no message for #{timeout} ms")
    end
  end
end
