defmodule Lacca.Signal do
  @moduledoc """
  Linux signal names and numbers.

  lacca names signals with lowercase atoms (`:sigterm`, `:sigkill`, ...), the
  way `t:Lacca.status/0` reports a death by signal. Signals without a name
  (real-time signals 32..64) are plain integers.

  ## Examples

      iex> Lacca.Signal.to_number(:sigterm)
      {:ok, 15}
      iex> Lacca.Signal.to_number(9)
      {:ok, 9}
      iex> Lacca.Signal.to_number(:sigfoo)
      {:error, :unknown_signal}
      iex> Lacca.Signal.to_name(9)
      :sigkill
      iex> Lacca.Signal.to_name(40)
      40
  """

  @typedoc "A signal name such as `:sigterm`."
  @type name :: atom()

  @typedoc "A signal given by name or by Linux number."
  @type signal :: name() | non_neg_integer()

  @signals [
    sighup: 1,
    sigint: 2,
    sigquit: 3,
    sigill: 4,
    sigtrap: 5,
    sigabrt: 6,
    sigbus: 7,
    sigfpe: 8,
    sigkill: 9,
    sigusr1: 10,
    sigsegv: 11,
    sigusr2: 12,
    sigpipe: 13,
    sigalrm: 14,
    sigterm: 15,
    sigstkflt: 16,
    sigchld: 17,
    sigcont: 18,
    sigstop: 19,
    sigtstp: 20,
    sigttin: 21,
    sigttou: 22,
    sigurg: 23,
    sigxcpu: 24,
    sigxfsz: 25,
    sigvtalrm: 26,
    sigprof: 27,
    sigwinch: 28,
    sigio: 29,
    sigpwr: 30,
    sigsys: 31
  ]

  # Aliases accepted as input; numbers are reported with the names above.
  @aliases [sigiot: 6, sigpoll: 29, sigcld: 17]

  # Signal 0 only checks that the process exists; 64 is SIGRTMAX on Linux.
  @max 64

  @doc "All named signals as a keyword list `[sighup: 1, ...]`."
  @spec all() :: [{name(), pos_integer()}]
  def all, do: @signals

  @doc """
  Converts a signal name or number into its Linux number.

  Raises `ArgumentError` when `signal` is neither an atom nor an integer.
  """
  @spec to_number(signal()) :: {:ok, non_neg_integer()} | {:error, :unknown_signal}
  for {name, number} <- @signals ++ @aliases do
    def to_number(unquote(name)), do: {:ok, unquote(number)}
  end

  def to_number(n) when is_integer(n) and n >= 0 and n <= @max, do: {:ok, n}
  def to_number(n) when is_integer(n) or is_atom(n), do: {:error, :unknown_signal}

  def to_number(other) do
    raise ArgumentError,
          "expected a signal name (an atom such as :sigterm) or a signal number, got: " <>
            inspect(other)
  end

  @doc "Converts a Linux signal number into its name, or the number when it has none."
  @spec to_name(non_neg_integer()) :: signal()
  for {name, number} <- @signals do
    def to_name(unquote(number)), do: unquote(name)
  end

  def to_name(n) when is_integer(n), do: n
end
