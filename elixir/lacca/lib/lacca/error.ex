defmodule Lacca.Error do
  @moduledoc """
  Raised by `Lacca.stream!/3` and `Lacca.stream/3` when the command cannot
  run (`reason` is one of the `t:Lacca.spawn_error/0` reasons) or resin died
  (`:resin_down`). A process that ran and failed raises `Lacca.ExitError`
  instead (`stream!/3` only).
  """

  defexception [:command, :reason]

  @impl true
  def message(%{command: command, reason: {:resin_not_found, message}}),
    do: "cannot run #{inspect(command)}: #{message}"

  def message(%{command: command, reason: reason}),
    do: "cannot run #{inspect(command)}: #{inspect(reason)}"
end
