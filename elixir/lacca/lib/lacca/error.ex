defmodule Lacca.Error do
  @moduledoc """
  Raised by `Lacca.stream!/3` and `Lacca.stream/3` when the command cannot
  run: `reason` is one of the `t:Lacca.spawn_error/0` reasons (`:resin_down`
  also when resin died while the stream ran). A process that ran and failed
  raises `Lacca.ExitError` instead (`stream!/3` only).
  """

  defexception [:command, :reason]

  @type t :: %__MODULE__{command: String.t(), reason: Lacca.spawn_error()}

  # The errno reasons of t:Lacca.errno/0 (keep both lists in step).
  @errnos [
    :enoent,
    :eacces,
    :eperm,
    :enoexec,
    :e2big,
    :etxtbsy,
    :eisdir,
    :enotdir,
    :eloop,
    :enametoolong,
    :elibbad,
    :einval,
    :eio,
    :enomem,
    :emfile,
    :enfile,
    :eagain,
    :enosys,
    :enotsup,
    :ebusy,
    :enospc,
    :erange
  ]

  @impl true
  def message(%{command: command, reason: {:resin_not_found, message}}),
    do: "cannot run #{inspect(command)}: #{message}"

  def message(%{command: command, reason: reason}),
    do: "cannot run #{inspect(command)}: #{inspect(reason)}"

  @doc false
  # The errno atoms a spawn_error may carry.
  @spec errnos() :: [Lacca.errno()]
  def errnos, do: @errnos

  @doc false
  # resin's spawn_error reason as one of t:Lacca.spawn_error/0: an errno
  # outside the documented set becomes :eio, anything else (a reason lacca
  # does not know: a resin bug) {:resin_failed, :protocol_error}.
  @spec spawn_reason(term()) :: Lacca.spawn_error()
  def spawn_reason(reason) when reason in @errnos, do: reason

  def spawn_reason({stage, errno}) when stage in [:cwd, :cgroup, :user, :group, :rlimit, :pty],
    do: {stage, errno(errno)}

  def spawn_reason({:resin_not_found, message}) when is_binary(message),
    do: {:resin_not_found, message}

  def spawn_reason({:resin_failed, _} = failed), do: failed
  def spawn_reason(:resin_down), do: :resin_down

  def spawn_reason(reason) when is_atom(reason) do
    if errno?(reason), do: :eio, else: {:resin_failed, :protocol_error}
  end

  def spawn_reason(_reason), do: {:resin_failed, :protocol_error}

  defp errno(errno) when errno in @errnos, do: errno
  defp errno(_other), do: :eio

  # resin names an errno by its lowercase C name (enoent), or errnoN.
  defp errno?(atom), do: Atom.to_string(atom) =~ ~r/^e[a-z0-9]+$/
end
