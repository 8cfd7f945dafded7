defmodule Lacca.ExitError do
  @moduledoc """
  Raised by `Lacca.stream!/3`, once all the output has been consumed, when the
  process did not exit with status 0.

    * `:command` and `:args` - what was run
    * `:status` - how it ended: `{:exit, code}` with `code != 0`, or
      `{:signal, name}` (see `t:Lacca.status/0`)
  """

  defexception [:command, :args, :status]

  @type t :: %__MODULE__{
          command: String.t(),
          args: [String.t()],
          status: Lacca.status()
        }

  @impl true
  def message(%{command: command, status: {:exit, code}}),
    do: "#{inspect(command)} exited with status #{code}"

  def message(%{command: command, status: {:signal, signal}}),
    do: "#{inspect(command)} was killed by signal #{inspect(signal)}"

  def message(%{command: command, status: status}),
    do: "#{inspect(command)} ended with #{inspect(status)}"
end
