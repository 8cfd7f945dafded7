defmodule Lacca.ExitError do
  @moduledoc """
  Raised by `Lacca.stream!/3`, once all the output has been consumed, when the
  process did not exit with status 0.

    * `:command` and `:args` - what was run
    * `:status` - how it ended: `{:exit, code}` with `code != 0`, or
      `{:signal, name}` (see `t:Lacca.status/0`)
    * `:stderr` - the last 4 KiB (4,096 bytes) of what the process wrote to
      stderr, also when stderr was not streamed (`stderr: :discard`, the
      default); `nil` with `stderr: :stdout` (merged into the stream). Only
      the tail is kept, whatever the process writes. The message shows it

  ## Examples

      iex> Lacca.stream!("sh", ["-c", "echo no such file >&2; exit 2"]) |> Enum.to_list()
      ** (Lacca.ExitError) "sh" exited with status 2, stderr:
      no such file
  """

  defexception [:command, :args, :status, :stderr]

  @type t :: %__MODULE__{
          command: String.t(),
          args: [String.t()],
          status: Lacca.status(),
          stderr: binary() | nil
        }

  @tail 4096

  @impl true
  def message(%{stderr: stderr} = e) when stderr in [nil, ""], do: ended(e)

  def message(%{stderr: stderr} = e) do
    what = if byte_size(stderr) >= @tail, do: "the last #{@tail} bytes of stderr", else: "stderr"
    text = String.trim_trailing(stderr, "\n")
    text = if String.printable?(text), do: text, else: inspect(stderr)
    ended(e) <> ", " <> what <> ":\n" <> text
  end

  defp ended(%{command: command, status: {:exit, code}}),
    do: "#{inspect(command)} exited with status #{code}"

  defp ended(%{command: command, status: {:signal, signal}}),
    do: "#{inspect(command)} was killed by signal #{inspect(signal)}"

  defp ended(%{command: command, status: status}),
    do: "#{inspect(command)} ended with #{inspect(status)}"
end
