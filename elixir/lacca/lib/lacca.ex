defmodule Lacca do
  @moduledoc """
  Run and control OS processes from Elixir, safely.

  lacca starts OS processes through **resin**, a port program that spawns and
  supervises them and multiplexes their stdio onto one BEAM port. Compared to
  `System.cmd/3` and plain ports, lacca keeps stdout and stderr apart, can
  write *and close* stdin, reports real exit statuses and signals, stops
  processes gracefully, never leaves orphans behind when an owner or the BEAM
  dies, and never lets a fast child flood the VM (output is flow controlled).

  ## Running a command

      iex> {:ok, result} = Lacca.run("echo", ["hello"])
      iex> result
      %Lacca.Result{stdout: "hello\\n", stderr: "", status: {:exit, 0}}

      iex> {:ok, %Lacca.Result{stdout: out}} = Lacca.run("cat", [], input: "to cat")
      iex> out
      "to cat"

  ## Long-running processes

  `start/3` and `start_link/3` return the pid of a process server that owns
  one OS process. With `output: :buffer` (the default) output is buffered in
  the server and read with `read_stdout/2`; with `output: :messages` the owner
  receives messages:

    * `{:lacca, pid, {:stdout, binary}}` and `{:lacca, pid, {:stderr, binary}}`
    * `{:lacca, pid, :passive}` when an `active: n` count ran out
    * exactly one final message: `{:lacca, pid, {:exit, status}}`, or
      `{:lacca, pid, {:error, :resin_down}}` when resin itself died

  The lacca 0.2.3 API works as before:

      {:ok, pid} = Lacca.start "echo", ["hello, world."]
      Lacca.read_stdout pid
      # {:ok, "hello, world.\\n"}
      Lacca.stop pid

  ## Containment

  Every OS process runs in its own process group. A process started with
  `start_link/3` dies with its owner, one started with `owner: pid` is stopped
  when that owner exits, the processes of a crashed `run/3` caller are killed,
  and stopping the `:lacca` application stops everything it started. If the
  whole BEAM dies, resin sees its stdin close and kills every process group.

  ## Finding resin

  See `Lacca.Resin`: `config :lacca, :resin`, `$LACCA_RESIN`, the resin this
  repository's `make setup` installed, or `resin` on the `PATH`. When none is
  found every spawn returns `{:error, {:resin_not_found, message}}` with a
  message that says how to install it.

  ## resin daemons

  One resin serves many OS processes. lacca runs a few shared resins (started
  on first use, restarted when one dies; processes are spread over them
  round robin): `config :lacca, :shared_daemons, n` sets how many (default:
  the number of schedulers, at most 4). `daemon: :dedicated` gives a process
  a resin of its own, for isolation.

  When a resin dies, the processes it served are killed (with their process
  groups), their awaiters get `{:error, :resin_down}`, owners in
  `:messages` mode get `{:lacca, pid, {:error, :resin_down}}` and `run/3`
  returns `{:error, :resin_down}`; new work gets a new resin.
  """

  alias Lacca.{Options, Signal}

  @typedoc "A process server started by `start/3` or `start_link/3`."
  @type server :: pid()

  @typedoc """
  How an OS process ended: `{:exit, code}`, or `{:signal, name}` with a name
  such as `:sigkill` (the signal number for signals without a name).
  """
  @type status :: {:exit, 0..255} | {:signal, Signal.name() | pos_integer()}

  @typedoc "Why a spawn failed: `:enoent`, `:eacces`, `{:cwd, :enoent}`, ... (resin's reasons)."
  @type spawn_error ::
          :enoent
          | :eacces
          | {:cwd, atom()}
          | {:resin_not_found, String.t()}
          | :resin_down
          | term()

  @typedoc "Options accepted by `run/3`, `start/3` and friends to set up the process."
  @type spawn_option ::
          {:cd, Path.t()}
          | {:env, %{optional(String.t()) => String.t() | nil} | [{String.t(), String.t() | nil}]}
          | {:clear_env, boolean()}
          | {:arg0, String.t()}
          | {:stderr, :capture | :stdout | :discard}
          | {:stdin, :pipe | :null}
          | {:daemon, :shared | :dedicated}
          | {:kill_timeout, non_neg_integer()}
          | {:stop_signal, Signal.signal()}

  @typedoc "Options of `start/3` and `start_link/3`."
  @type start_option ::
          spawn_option()
          | {:output, :buffer | :messages}
          | {:owner, pid()}
          | {:active, active()}
          | {:max_buffer, pos_integer()}

  @typedoc "Options of `run/3` and `shell/2`."
  @type run_option ::
          spawn_option()
          | {:input, iodata()}
          | {:timeout, timeout()}
          | {:into, Collectable.t()}

  @typedoc "Active mode of an `output: :messages` process, as in `:gen_tcp`."
  @type active :: boolean() | :once | pos_integer()

  @spawn_options_doc """
    * `:cd` - working directory of the process (default: the BEAM's current
      working directory)
    * `:env` - a map or list of `{name, value}` binaries to set; a `nil` value
      unsets the variable. The process starts from resin's environment (the
      BEAM's environment when resin started), not from later
      `System.put_env/2` calls
    * `:clear_env` - start from an empty environment (default `false`)
    * `:arg0` - the program name the process sees as `argv[0]`
    * `:stderr` - `:capture` (default), `:stdout` (merged into stdout) or
      `:discard`
    * `:stdin` - `:pipe` (default) or `:null` (`/dev/null`)
    * `:daemon` - `:shared` (default: one resin serves many processes) or
      `:dedicated` (a resin of its own, for isolation)
    * `:kill_timeout` - milliseconds between the stop signal and SIGKILL when
      stopping (default `5000`)
    * `:stop_signal` - the signal that asks the process to stop (default
      `:sigterm`)
  """

  # -- run -------------------------------------------------------------------

  @doc """
  Runs `cmd` with `args` to completion and returns its output and status.

  `cmd` is executed directly (no shell): a path, or a name looked up on the
  `PATH`. Use `shell/2` to run a shell command line.

  Returns `{:ok, %Lacca.Result{}}` whenever the process ran, whatever its
  exit status, and `{:error, reason}` when it could not run (`:enoent`,
  `:eacces`, `{:cwd, :enoent}`, `{:resin_not_found, message}`, `:resin_down`).

  The process runs under the calling process: if the caller dies, the
  process (and its process group) is killed.

  ## Options

    * `:input` - iodata written to the process's stdin, which is then closed.
      Without `:input` stdin is `/dev/null` unless `stdin: :pipe` is given
    * `:timeout` - milliseconds; when they have passed the process is stopped
      (stop signal, then SIGKILL after `:kill_timeout`) and the result has
      `status: :timeout` and the output written so far (default `:infinity`)
    * `:into` - a `Collectable` for stdout, like `System.cmd/3` (default `""`)
  #{@spawn_options_doc}

  ## Examples

      iex> Lacca.run("sh", ["-c", "echo out; echo err >&2; exit 3"])
      {:ok, %Lacca.Result{stdout: "out\\n", stderr: "err\\n", status: {:exit, 3}}}

      iex> Lacca.run("/nonexistent/program", [])
      {:error, :enoent}

      iex> {:ok, result} = Lacca.run("printf", ["a\\nb\\n"], into: [])
      iex> IO.iodata_to_binary(result.stdout)
      "a\\nb\\n"
  """
  @spec run(String.t(), [String.t()], [run_option()]) ::
          {:ok, Lacca.Result.t()} | {:error, spawn_error()}
  def run(cmd, args, opts \\ []) do
    {exec, args} = Options.command!(cmd, args)
    Lacca.Runner.run(exec, args, Options.run!(opts))
  end

  @doc """
  Runs `command` with `sh -c` and returns like `run/3`.

  Only use it for trusted command lines: the shell interprets them.

  ## Options

  The options of `run/3`.

  ## Examples

      iex> {:ok, result} = Lacca.shell("echo $((6 * 7)) | tr 4 x")
      iex> result.stdout
      "x2\\n"
  """
  @spec shell(String.t(), [run_option()]) :: {:ok, Lacca.Result.t()} | {:error, spawn_error()}
  def shell(command, opts \\ []) when is_binary(command),
    do: run("/bin/sh", ["-c", command], opts)

  # -- stream -----------------------------------------------------------------

  @doc """
  Runs `cmd` with `args` and returns a lazy stream of its stdout, in chunks
  (binaries) as the process writes them.

  The process starts when the stream is consumed, linked to the consuming
  process, and runs only as fast as the stream is consumed: a few chunks
  are handed over ahead of the consumer and at most `:max_buffer` bytes (1
  MiB by default) wait in lacca, so the process blocks instead of filling
  memory. The stream ends when the process exits,
  whatever its status (use `start/3` with `output: :messages` to see it);
  halting the stream early (`Enum.take/2`, ...) stops the process.

  Raises `Lacca.Error` when the process cannot be started or resin dies.

  ## Options

  stderr is discarded unless the `:stderr` option says otherwise
  (`stderr: :stdout` merges it into the stream).
  #{@spawn_options_doc}
    * `:max_buffer` - bytes read ahead of the consumer (default 1 MiB)
    * `:lines` - `true` to emit lines (each with its `"\\n"`, like
      `File.stream!/1`; the last one without it if the output does not end
      with a newline) instead of chunks (default `false`)

  ## Examples

      iex> Lacca.stream!("printf", ["a\\nb\\nc\\n"]) |> Enum.join()
      "a\\nb\\nc\\n"

      iex> Lacca.stream!("yes", [], lines: true) |> Enum.take(3)
      ["y\\n", "y\\n", "y\\n"]
  """
  @spec stream!(String.t(), [String.t()], [
          spawn_option() | {:max_buffer, pos_integer()} | {:lines, boolean()}
        ]) ::
          Enumerable.t()
  def stream!(cmd, args, opts \\ []) do
    {exec, args} = Options.command!(cmd, args)
    {lines?, opts} = Keyword.pop(opts, :lines, false)

    unless is_boolean(lines?) do
      raise ArgumentError,
            "invalid value for :lines option: expected a boolean, got: #{inspect(lines?)}"
    end

    spec = Options.stream!(opts)

    Stream.resource(
      fn ->
        case Lacca.Process.start(exec, args, spec, true) do
          {:ok, pid} -> {pid, if(lines?, do: "", else: nil)}
          {:error, reason} -> raise Lacca.Error, command: cmd, reason: reason
        end
      end,
      &stream_next(&1, cmd),
      fn
        :done ->
          :ok

        {pid, _} ->
          stop(pid)
          flush_messages(pid)
      end
    )
  end

  # The server delivers a few chunks ahead (active: n); each chunk taken asks
  # for one more, so at most that many wait in the consumer's mailbox.
  defp stream_next(:done, _cmd), do: {:halt, :done}

  defp stream_next({pid, partial} = state, cmd) do
    receive do
      {:lacca, ^pid, {:stdout, data}} ->
        GenServer.cast(pid, {:set_active, 1})
        split_lines(data, state)

      {:lacca, ^pid, {:stderr, _data}} ->
        GenServer.cast(pid, {:set_active, 1})
        {[], state}

      {:lacca, ^pid, :passive} ->
        {[], state}

      {:lacca, ^pid, {:exit, _status}} ->
        if partial in [nil, ""], do: {:halt, :done}, else: {[partial], :done}

      {:lacca, ^pid, {:error, reason}} ->
        raise Lacca.Error, command: cmd, reason: reason
    end
  end

  defp split_lines(data, {_pid, nil} = state), do: {[data], state}

  defp split_lines(data, {pid, partial}) do
    [last | lines] = :binary.split(partial <> data, "\n", [:global]) |> Enum.reverse()
    {Enum.reduce(lines, [], &[&1 <> "\n" | &2]), {pid, last}}
  end

  defp flush_messages(pid) do
    receive do
      {:lacca, ^pid, _} -> flush_messages(pid)
    after
      0 -> :ok
    end
  end

  # -- start ----------------------------------------------------------------

  @doc """
  Starts `cmd` with `args` as an OS process owned by a new process server.

  The server is not linked to the caller (see `start_link/3`). Returns
  `{:ok, pid}` once the OS process runs, or `{:error, reason}` when it could
  not be started (see `run/3`).

  ## Options

    * `:output` - `:buffer` (default): output is kept in the server and read
      with `read_stdout/2` and `read_stderr/2`. At most `:max_buffer` bytes
      are buffered per stream: beyond that the process blocks on its next
      write until the buffer is read. `:messages`: output is sent to the owner
      (see the module documentation)
    * `:owner` - the process that receives the messages (default: the
      caller). When given, the OS process is stopped when the owner exits; in
      `:messages` mode the owner (given or not) is always watched
    * `:active` - `:messages` mode only: `true` (default), `false`, `:once` or
      a positive integer, as in `:gen_tcp` (see `set_active/2`). Output that
      is not delivered is not read from the process either
    * `:max_buffer` - bytes of output that may wait per stream (default 1 MiB)
  #{@spawn_options_doc}

  ## Lifetime of the server

  In `:buffer` mode the server stays after the OS process exited, so that its
  output and status can still be read; `stop/1` ends it. In `:messages` mode
  it ends right after the final `{:exit, status}` message.
  """
  @spec start(String.t(), [String.t()], [start_option()]) ::
          {:ok, server()} | {:error, spawn_error()}
  def start(cmd, args, opts \\ []), do: do_start(cmd, args, opts, false)

  @doc """
  Like `start/3`, but the process server is linked to the caller.

  When the caller exits, the server stops the OS process (gracefully, as
  `stop/1` does) and exits too, and the whole process group goes with it.

  ## Options

  The options of `start/3`.
  """
  @spec start_link(String.t(), [String.t()], [start_option()]) ::
          {:ok, server()} | {:error, spawn_error()}
  def start_link(cmd, args, opts \\ []), do: do_start(cmd, args, opts, true)

  defp do_start(cmd, args, opts, link?) do
    {exec, args} = Options.command!(cmd, args)
    Lacca.Process.start(exec, args, Options.start!(opts), link?)
  end

  @doc """
  A child specification to run an OS process in a supervision tree.

  ## Options

    * `:cmd` - the command (required)
    * `:args` - its arguments (default `[]`)
    * `:id`, `:restart`, `:shutdown` - as in `Supervisor.child_spec/2`
      (`:shutdown` defaults to `:kill_timeout` plus 2 seconds)
    * any option of `start/3`

  ## Examples

      children = [{Lacca, cmd: "redis-server", args: ["--port", "7777"], output: :messages}]
      Supervisor.start_link(children, strategy: :one_for_one)
  """
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) when is_list(opts) do
    {cmd, opts} = Keyword.pop(opts, :cmd)
    {args, opts} = Keyword.pop(opts, :args, [])
    {spec_opts, opts} = Keyword.split(opts, [:id, :restart, :shutdown])

    if cmd == nil, do: raise(ArgumentError, "Lacca.child_spec/1 needs the :cmd option")
    Options.command!(cmd, args)
    start = Options.start!(opts)

    %{
      id: Keyword.get(spec_opts, :id, Lacca),
      start: {Lacca, :start_link, [cmd, args, opts]},
      restart: Keyword.get(spec_opts, :restart, :permanent),
      shutdown: Keyword.get(spec_opts, :shutdown, start.kill_timeout + 2_000),
      type: :worker
    }
  end

  # -- reading ----------------------------------------------------------------

  @doc """
  Returns and clears what the process wrote to stdout (`output: :buffer`).

  When nothing is buffered it waits until output arrives, the process exits,
  or `timeout` milliseconds passed, and then returns `{:ok, ""}`. A process
  blocked because its buffer is full continues once it has been read.

  Raises `ArgumentError` for a process started with `output: :messages`.
  """
  @spec read_stdout(server(), timeout()) :: {:ok, binary()} | {:error, :noproc}
  def read_stdout(pid, timeout \\ 1_000), do: read(pid, :stdout, timeout)

  @doc """
  Returns and clears what the process wrote to stderr, like `read_stdout/2`.
  """
  @spec read_stderr(server(), timeout()) :: {:ok, binary()} | {:error, :noproc}
  def read_stderr(pid, timeout \\ 1_000), do: read(pid, :stderr, timeout)

  defp read(pid, stream, timeout) do
    check_timeout!(timeout)

    case call(pid, {:read, stream, timeout}) do
      {:error, :not_buffer} ->
        raise ArgumentError,
              "read_#{stream}/2 needs a process started with output: :buffer, " <>
                "#{inspect(pid)} sends its output as messages"

      other ->
        other
    end
  end

  @doc """
  Changes the active mode of an `output: :messages` process, as
  `:inet.setopts(socket, active: active)` does for a socket.

  `true` delivers everything, `:once` one chunk, `false` nothing; an integer
  is added to the current count (like `{:active, n}` in `:gen_tcp`): when the
  count reaches zero the owner gets `{:lacca, pid, :passive}`. While no output
  is delivered, resin gets no more credit: the process blocks once its
  `:max_buffer` is used.
  """
  @spec set_active(server(), active() | integer()) :: :ok | {:error, :noproc}
  def set_active(pid, active) when is_boolean(active) or active == :once or is_integer(active) do
    case call(pid, {:set_active, active}) do
      {:error, :not_messages} ->
        raise ArgumentError, "set_active/2 needs a process started with output: :messages"

      other ->
        other
    end
  end

  def set_active(_pid, active) do
    raise ArgumentError,
          "expected active to be true, false, :once or an integer, got: #{inspect(active)}"
  end

  # -- writing ------------------------------------------------------------------

  @doc """
  Writes `data` to the process's stdin.

  Returns `:ok` once resin wrote all of it into the process's stdin pipe.
  Large writes are sent in frames of at most 65,530 bytes, in order, with a
  few frames in flight at a time: the caller waits meanwhile, so a process
  that does not read its stdin slows the writer down instead of filling
  memory.

  Returns `{:error, :epipe}` when the process closed its stdin, `{:error,
  :closed}` after `close_stdin/1` (or with `stdin: :null`), `{:error,
  :exited}` when the process is gone.
  """
  @spec write_stdin(server(), iodata()) ::
          :ok | {:error, :epipe | :closed | :exited | :resin_down | :noproc}
  def write_stdin(pid, data) do
    IO.iodata_length(data)
    call(pid, {:write, data})
  rescue
    ArgumentError -> raise ArgumentError, "expected data to be iodata, got: #{inspect(data)}"
  end

  @doc """
  Closes the process's stdin (the process reads end-of-file) after every
  write queued before it was written. Returns once resin closed the pipe.
  """
  @spec close_stdin(server()) :: :ok | {:error, term()}
  def close_stdin(pid), do: call(pid, :close_stdin)

  # -- control --------------------------------------------------------------

  @doc """
  Sends `signal` to the process: a name such as `:sigterm`, `:sighup`,
  `:sigusr1`, `:sigstop`, `:sigcont` (see `Lacca.Signal`) or a Linux signal
  number.

  Returns `{:error, :unknown_signal}` for a name or number that is no signal,
  `{:error, :exited}` when the process is gone. Raises `ArgumentError` when
  `signal` is neither an atom nor an integer.

  ## Options

    * `:group` - send the signal to the whole process group (default `false`)
  """
  @spec signal(server(), Signal.signal(), keyword()) ::
          :ok | {:error, :unknown_signal | :exited | :resin_down | :noproc | atom()}
  def signal(pid, signal, opts \\ []) do
    opts = Keyword.validate!(opts, group: false)
    group = Keyword.fetch!(opts, :group)

    unless is_boolean(group) do
      raise ArgumentError,
            "invalid value for :group option: expected a boolean, got: #{inspect(group)}"
    end

    case Signal.to_number(signal) do
      {:ok, signo} -> call(pid, {:signal, signo, group})
      {:error, :unknown_signal} -> {:error, :unknown_signal}
    end
  end

  @doc """
  Sends SIGKILL to the process group at once. Returns `:ok` (also when the
  process is already gone).
  """
  @spec kill(server()) :: :ok
  def kill(pid) do
    case call(pid, :kill) do
      {:error, _} -> :ok
      :ok -> :ok
    end
  end

  @doc """
  Stops the process gracefully and returns `:ok` once it is gone.

  Sends the stop signal (SIGTERM unless `:stop_signal` was given) to the
  process group, and SIGKILL when the process is still there after
  `kill_timeout` milliseconds (default: the `:kill_timeout` option, 5,000).
  Then the process server ends.
  """
  @spec stop(server(), non_neg_integer() | nil) :: :ok
  def stop(pid, kill_timeout \\ nil) do
    unless kill_timeout == nil or (is_integer(kill_timeout) and kill_timeout >= 0) do
      raise ArgumentError,
            "expected kill_timeout to be a non-negative integer, got: #{inspect(kill_timeout)}"
    end

    _ = call(pid, {:stop, kill_timeout})
    :ok
  end

  @doc """
  Waits until the process exited and returns its status.

  Returns `{:error, :timeout}` when it still runs after `timeout`
  milliseconds, `{:error, :resin_down}` when resin died, `{:error, :noproc}`
  when the server is gone (an `output: :messages` server ends after its final
  message).
  """
  @spec await(server(), timeout()) ::
          {:ok, status()} | {:error, :timeout | :resin_down | :noproc}
  def await(pid, timeout \\ :infinity) do
    check_timeout!(timeout)
    call(pid, {:await, timeout})
  end

  @doc """
  Whether the OS process is still running.
  """
  @spec alive?(server()) :: boolean()
  def alive?(pid) do
    case call(pid, :alive?) do
      true -> true
      _ -> false
    end
  end

  @doc """
  The exit code of the process (lacca 0.2.3): an integer once it exited, `nil`
  while it runs or when it was killed by a signal. `await/2` gives the full
  status.
  """
  @spec status(server()) :: non_neg_integer() | nil
  def status(pid) do
    case call(pid, :status) do
      {:exit, code} -> code
      _ -> nil
    end
  end

  @doc """
  The OS pid of the process (also its process group id), or `nil` when the
  server is gone.
  """
  @spec os_pid(server()) :: pos_integer() | nil
  def os_pid(pid) do
    case call(pid, :os_pid) do
      {:error, :noproc} -> nil
      os_pid -> os_pid
    end
  end

  # -- helpers ----------------------------------------------------------------

  defp call(pid, request) do
    GenServer.call(pid, request, :infinity)
  catch
    :exit, {reason, {GenServer, :call, _}} when reason in [:noproc, :normal, :shutdown] ->
      {:error, :noproc}

    :exit, {{:shutdown, _}, {GenServer, :call, _}} ->
      {:error, :noproc}
  end

  defp check_timeout!(:infinity), do: :ok
  defp check_timeout!(t) when is_integer(t) and t >= 0, do: :ok

  defp check_timeout!(t),
    do:
      raise(
        ArgumentError,
        "expected timeout to be a non-negative integer or :infinity, got: #{inspect(t)}"
      )
end
