defmodule Lacca.Result do
  @moduledoc """
  The outcome of `Lacca.run/3` and `Lacca.shell/2`.

    * `:stdout` - everything the process wrote to stdout, collected into the
      `:into` collectable (a binary by default)
    * `:stderr` - everything it wrote to stderr (`""` with `stderr: :stdout`
      or `stderr: :discard`)
    * `:status` - how it ended: `{:exit, code}`, `{:signal, name}` (a name such
      as `:sigkill`, or the number of a signal without a name), or `:timeout`
      when the `:timeout` option stopped it
  """

  @type t :: %__MODULE__{
          stdout: Collectable.t(),
          stderr: binary(),
          status: Lacca.status() | :timeout
        }

  defstruct stdout: "", stderr: "", status: nil
end
