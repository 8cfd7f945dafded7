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

  How many chunks the owner gets is set by the `:active` option and
  `set_active/2`, as for a `:gen_tcp` socket: `active: :flow` (the default)
  sends everything, in bounded memory (see "Flow control"), `active: true`
  sends everything without a bound, `active: n` sends `n` chunks and then
  `{:lacca, pid, :passive}`, `active: :once` one chunk, `active: false` none.

  ## Streams

  `stream!/3` (and `stream/3`) run a process as a lazy `Enumerable` of its
  output, read only as fast as it is consumed, with input from any
  `Enumerable`:

      Lacca.stream!("sort", [], input: File.stream!("names.txt"), lines: true)
      |> Stream.map(&String.trim_trailing/1)
      |> Enum.take(10)

  ## Flow control

  resin reads a process's output only while lacca gave it *credit* for it,
  so output never piles up faster than it is consumed: once the credit is
  used, the process blocks in `write(2)` (see `docs/protocol.md`, section
  4.5). Each OS process may have at most `:max_buffer` bytes per stream
  (1 MiB by default) read ahead of its consumer:

    * `stream!/3`: bytes in the consumer's mailbox, returned as it takes
      elements, so a consumer that sleeps holds any producer in bounded memory
    * `output: :buffer`: bytes in the server, returned by `read_stdout/2` and
      `read_stderr/2`
    * `output: :messages`: bytes sent to the owner. With `active: :flow`
      (the default) every chunk is sent as it arrives, but while the owner's
      message queue holds more than 64 messages resin gets no more credit
      (looked at again every 1 to 64 ms), so an owner that does not read
      holds the process in a few MiB. An owner on another node too: its
      queue cannot be read from the server's node, so before each grant
      (every quarter of `:max_buffer` consumed) the server asks the
      owner's node, without waiting in a call: the grant waits for the
      answer, a network round trip, while resin goes on with the credit it
      still has. The question travels behind the chunks sent before it, so
      the answer counts them; what resin sends while it is on its way (at
      most the credit it had, about `:max_buffer`) may come on top. A
      failure instead of an answer (the owner or its node is gone) counts
      as caught up, and so does a node that cannot run an `:erpc` request
      (an erl_interface C node, for one: `{:erpc, :notsup}`): an owner
      there is not bounded, as with `active: true`. With `active: n`,
      `:once` or `false` at most `n` chunks go to the owner's mailbox and
      the rest waits in the server: bounded. `active: true` sends
      everything as soon as it arrives, so, as with `:gen_tcp`, an owner
      that does not keep up lets its mailbox grow.
    * `run/3`: chunks are collected into `:into` as they arrive

  Where it can (`run/3`, streams and `output: :messages` with `active: true`
  or `:flow`, locally, without a pty), lacca reads stdout from the process's
  pipe itself instead of through resin ("direct output", half the copies);
  the same bounds hold: the reader stops at `:max_buffer` bytes ahead of the
  consumer (or, for `:messages`, while the owner is behind), so the process
  blocks in `write(2)` as it does without credit. `config :lacca,
  :direct_output, false` leaves every stream to resin.

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

  resin finds every descendant of a process, also those that left its
  process group: each OS process runs in a cgroup of its own where the
  machine allows it (a cgroup v2 hierarchy resin may write to, Linux 5.14 or
  later), and otherwise by the `RESIN_TREE` cookie in the environment and
  the live process tree. `config :lacca, :cgroups, false` makes resin use
  the process tree only. `info/0` tells which is in use. The README's
  "Stopping and cleanup" says which mechanism covers which case.

  ## Finding resin

  See `Lacca.Resin`, first found wins: `config :lacca, :resin`,
  `$LACCA_RESIN`, the resin bundled into lacca's `priv/resin` when lacca was
  compiled, the resin this repository's `make setup` installed, or `resin`
  on the `PATH`. When none is found every spawn returns `{:error,
  {:resin_not_found, message}}` with a message that says how to install it.
  `info/0` tells which one is in use.

  ## resin daemons

  One resin serves many OS processes. lacca runs a few shared resins
  (processes are spread over them round robin): `config :lacca,
  :shared_daemons, n` sets how many (default: the number of schedulers, at
  most 4). `daemon: :dedicated` gives a process a resin of its own, for
  isolation.

  The shared resins start in the background when the `:lacca` application
  starts, so that the first `run/3` does not pay for starting one (a Python
  start, 50-100 ms); the application's start does not wait for them, and
  a spawn that comes before its resin is up waits for it.
  `config :lacca, :prestart, false` starts each shared resin on its first
  use instead. A prestart that fails (no resin found, ...) is not an error:
  the first spawn tries again and returns the reason, as without prestart. A
  shared resin that dies is replaced on the next spawn.

  When a resin dies, the processes it served are killed (with their process
  groups), their awaiters get `{:error, :resin_down}`, owners in
  `:messages` mode get `{:lacca, pid, {:error, :resin_down}}` and `run/3`
  returns `{:error, :resin_down}`; new work gets a new resin.

  ## Running on other nodes

  With `node: name` every entry point (`run/3`, `shell/2`, `stream!/3`,
  `stream/3`, `start/3`, `start_link/3`, `child_spec/1`) starts the OS
  process through the resin of another node of the cluster, where
  `:lacca` runs (`nodes/0` lists them; `node: :any` picks one of them in
  turn, this node included):

      {:ok, %Lacca.Result{stdout: out}} = Lacca.run("uname", ["-n"], node: :"worker@host2")

      Lacca.stream!("pg_dump", ["mydb"], node: :"db@host3")
      |> Stream.into(File.stream!("mydb.sql"))
      |> Stream.run()

  The process server runs on that node, next to its resin, so output
  frames never cross the network; the owner may be anywhere and gets its
  messages across the distribution connection. Every function that takes
  a server (`write_stdin/3`, `signal/3`, `await/2`, `read_stdout/2`, ...)
  works on a remote one as on a local one, by pid or as `{name, node}`.
  `run/3` and streams have no server on the caller's node: they start one
  on the target in `:messages` mode and take its output as messages, so
  `:into` collects on the caller's node.

  Flow control holds across nodes: a stream's consumer (and a `run/3`
  caller) grants the remote server credit counted in chunks, 32 at first
  and 16 more for every 16 consumed. So at most 32 chunks (of at most
  65,530 bytes) are in flight to the consumer and at most `:max_buffer`
  bytes per stream wait on the target node: a slow consumer on one node
  holds a fast producer on another in bounded memory on both.

  What happens when a node goes away:

  | what goes away | what happens |
  |---|---|
  | the owner's node (the caller of `start/3`, its `:owner`, a `start_link/3` caller, a `run/3` or stream caller) | the target node stops the OS processes it owned: stop signal, then SIGKILL after `:kill_timeout`; nothing is left running |
  | the target node | owners in `:messages` mode get `{:lacca, pid, {:error, :noconnection}}` as their final message; `await/2`, `read_stdout/2`, `write_stdin/3`, ... return `{:error, :noconnection}`; `run/3` returns `{:error, :noconnection}`; `stream!/3` and `stream/3` raise `Lacca.Error` with reason `:noconnection`. The OS processes die with their resin when their BEAM dies |
  | a `start_link/3` caller's or the server's node, for the other | the link fires as for any process: the server stops its OS process, the caller gets the exit signal `:noconnection` (and exits, unless it traps exits) |
  | the target node, before the start answered | `{:error, {:nodedown, node}}` (`stream!/3`: `Lacca.Error`) |
  | the connection only (a netsplit, both nodes live on) | each side does its part of the first two rows; once the connection is back (a call reconnects, as distributed Erlang does) the servers are gone: `{:error, :noproc}` |
  | `:lacca` is not running on the target | `{:error, {:lacca_not_started, node}}` |

  `{:error, :noconnection}` is sent by the owner's node, which watches the
  remote server: when the connection breaks just after the server's own
  final message left, the owner may get both; take the first final message
  of a pid and ignore what follows.

  A process started on another node with `start/3` in `:buffer` mode
  without `:owner` outlives its caller, as a local one does, but not the
  caller's node: once the caller's node disconnects, nobody could reach
  the process (a netsplit would orphan it), so it is stopped. A connection
  that comes back does not bring a process back: lacca does not reconnect
  nodes, distributed Erlang (or libcluster, ...) does.

  ## When the server is gone

  A process server ends with its OS process (see "Lifetime of the server"
  in `start/3`), after `stop/2`, or with its owner. Called with a server
  that is gone (or a name that is not registered), no function exits the
  caller; each one answers:

  | function | answer |
  |---|---|
  | `read_stdout/2`, `read_stderr/2` | `{:error, :noproc}` |
  | `write_stdin/3`, `close_stdin/1`, `signal/3`, `set_active/2`, `await/2` | `{:error, :noproc}` |
  | `stop/2`, `kill/1` | `:ok` (the process is gone: what they were asked for) |
  | `alive?/1` | `false` |
  | `status/1`, `os_pid/1` | `nil` |

  The functions of lacca 0.2.3 (`read_stdout`, `read_stderr`,
  `write_stdin`, `stop`, `kill`, `alive?`, `status`) keep these answers,
  the ones they have given since this API replaced 0.2.3's: `alive?/1`,
  `status/1`, `stop/2` and `kill/1` stay within their 0.2.3 return types (a
  boolean, an integer or `nil`, `:ok`), the reads and writes return `{:error,
  :noproc}`. (0.2.3 itself exited the caller with `:noproc` for every call
  to a server that was gone.) As a `:buffer` server ends once its output was
  read to its end after the exit, ask `status/1` or `await/2` for the exit
  status before that last read: afterwards `status/1` answers `nil`.
  """

  alias Lacca.{Options, Signal}

  @typedoc """
  A process server started by `start/3`, `start_link/3` or `child_spec/1`:
  its pid, or its `:name` in any `t:GenServer.server/0` form (an atom,
  `{:global, term}`, `{:via, module, term}`, `{atom, node}`). Every function
  that takes a server takes either.
  """
  @type server :: GenServer.server()

  @typedoc """
  How an OS process ended: `{:exit, code}`, or `{:signal, name}` with a name
  such as `:sigkill` (the signal number for signals without a name).
  """
  @type status :: {:exit, 0..255} | {:signal, Signal.name() | pos_integer()}

  @typedoc """
  Why a spawn failed: a closed set, the same for `run/3`, `shell/2`,
  `start/3`, `start_link/3` and (as `Lacca.Error`'s `:reason`) `stream!/3`.

    * an `t:errno/0`: the OS refused to start the program (`execve`, the
      pipes, `fork`): `:enoent` (no such program), `:eacces` (not
      executable), `:enoexec`, `:e2big` (arguments and environment too
      big), `:emfile` / `:enfile` (out of file descriptors), `:eagain`
      (out of processes), ...
    * `{:cwd, errno}`: the `:cd` directory cannot be entered (`:enoent`,
      `:eacces`, `:enotdir`, ...); without `:cd`, the BEAM's working
      directory (`:enoent` when it was removed)
    * `{:cgroup, errno}`: the `:cgroup` limits cannot be applied
      (`:enotsup` without cgroups, `:enoent` for a controller that is not
      enabled, ...)
    * `{:user, errno}`, `{:group, errno}`: the `:user` / `:group` cannot be
      taken: `:eperm` when resin does not run as root (nothing starts),
      `:enoent` for a name (or a uid without a group) that does not exist
    * `{:rlimit, errno}`: a `:rlimits` limit cannot be set (`:eperm`:
      raising a hard limit needs root)
    * `{:pty, errno}`: no pseudo-terminal could be opened or made the
      controlling terminal
    * `{:resin_not_found, message}`: no resin executable (see
      `Lacca.Resin`); the message says how to install one
    * `{:resin_failed, failure}`: resin was found but did not start (see
      `t:resin_failure/0`)
    * `:resin_down`: resin died before it answered
    * with `:node` (see "Running on other nodes"): `{:nodedown, node}`, the
      node is not connected (or went down before the start answered);
      `{:lacca_not_started, node}`, `:lacca` does not run there;
      `:noconnection`, the node went away while the process ran (`run/3`,
      streams)

  Before the error reaches the caller, a spawn that a shared resin refused
  for lack of resources (`:emfile`, `:eagain`) is tried once on each other
  shared resin: the error means that they all refused it.
  """
  @type spawn_error ::
          errno()
          | {:cwd, errno()}
          | {:cgroup, errno()}
          | {:user, errno()}
          | {:group, errno()}
          | {:rlimit, errno()}
          | {:pty, errno()}
          | {:resin_not_found, String.t()}
          | {:resin_failed, resin_failure()}
          | :resin_down
          | {:nodedown, node()}
          | {:lacca_not_started, node()}
          | :noconnection

  @typedoc """
  The errno a spawn can fail with (the lowercase C name). An errno outside
  this list (none is known) is reported as `:eio`.
  """
  @type errno ::
          :enoent
          | :eacces
          | :eperm
          | :enoexec
          | :e2big
          | :etxtbsy
          | :eisdir
          | :enotdir
          | :eloop
          | :enametoolong
          | :elibbad
          | :einval
          | :eio
          | :enomem
          | :emfile
          | :enfile
          | :eagain
          | :enosys
          | :enotsup
          | :ebusy
          | :enospc
          | :erange

  @typedoc """
  Why resin did not start, in `{:resin_failed, failure}`:

    * `{:open, posix}`: the resin executable could not be started
      (`:eacces`, `:enoent`, `:emfile`, ...)
    * `{:exit_status, n}`: resin exited with status `n` before its handshake
    * `:exited`: resin exited before it read the handshake (its status is
      lost: writing the handshake failed with EPIPE)
    * `:handshake_timeout`: resin did not answer the handshake in 15 s
    * `{:protocol_version, v}`: resin speaks another protocol version
    * `{:bad_handshake, data}`: resin answered something else (not a resin?)
    * `:protocol_error`: resin refused a spawn with a reason lacca does not
      know (a bug in resin or lacca)
  """
  @type resin_failure ::
          {:open, :file.posix()}
          | {:exit_status, non_neg_integer()}
          | :exited
          | :handshake_timeout
          | {:protocol_version, 0..255}
          | {:bad_handshake, binary()}
          | :protocol_error

  @typedoc "A limit of the `:cgroup` option."
  @type cgroup_limit ::
          {:memory_max, pos_integer()}
          | {:pids_max, pos_integer()}
          | {:cpu_max, {pos_integer(), pos_integer()}}

  @typedoc "A resource of the `:rlimits` option: setrlimit(2)'s `RLIMIT_*`, lowercase."
  @type rlimit_name ::
          :as
          | :core
          | :cpu
          | :data
          | :fsize
          | :locks
          | :memlock
          | :msgqueue
          | :nice
          | :nofile
          | :nproc
          | :rss
          | :rtprio
          | :rttime
          | :sigpending
          | :stack

  @typedoc "A resource limit: a non-negative integer (bytes, seconds, a count) or `:infinity`."
  @type rlimit_value :: non_neg_integer() | :infinity

  @typedoc "Options accepted by `run/3`, `start/3` and friends to set up the process."
  @type spawn_option ::
          {:cd, Path.t()}
          | {:env, %{optional(String.t()) => String.t() | nil} | [{String.t(), String.t() | nil}]}
          | {:clear_env, boolean()}
          | {:arg0, String.t()}
          | {:stderr, :capture | :stdout | :discard}
          | {:stdin, :pipe | :null}
          | {:cgroup, [cgroup_limit()]}
          | {:pty, boolean() | [rows: pos_integer(), cols: pos_integer()]}
          | {:user, String.t() | non_neg_integer()}
          | {:group, String.t() | non_neg_integer()}
          | {:rlimits, [{rlimit_name(), rlimit_value() | {rlimit_value(), rlimit_value()}}]}
          | {:daemon, :shared | :dedicated}
          | {:kill_timeout, non_neg_integer()}
          | {:stop_signal, Signal.signal()}
          | {:node, node() | :any}

  @typedoc "Options of `start/3` and `start_link/3`."
  @type start_option ::
          spawn_option()
          | {:output, :buffer | :messages}
          | {:owner, pid()}
          | {:active, active()}
          | {:max_buffer, pos_integer()}
          | {:name, GenServer.name()}
          | {:log_output, Logger.level() | nil}
          | {:log_prefix, String.t()}
          | {:log_stderr, boolean()}

  @typedoc "Options of `run/3` and `shell/2`."
  @type run_option ::
          spawn_option()
          | {:input, iodata()}
          | {:timeout, timeout()}
          | {:into, Collectable.t()}

  @typedoc "Options of `stream/3` and `stream!/3`."
  @type stream_option ::
          spawn_option()
          | {:input, iodata() | Enumerable.t()}
          | {:lines, boolean() | pos_integer()}
          | {:max_buffer, pos_integer()}

  @typedoc """
  Active mode of an `output: :messages` process, as in `:gen_tcp`, plus
  `:flow`: everything, in bounded memory (the default).
  """
  @type active :: :flow | boolean() | :once | pos_integer()

  @spawn_options_doc """
    * `:cd` - working directory of the process (default: the BEAM's current
      working directory at the spawn; for a stream, when it is built). resin
      reads it from `/proc/<BEAM's pid>/cwd`; where it may not (started
      through a wrapper that changed its user or capabilities, a BEAM that
      is not dumpable, another pid namespace, an older resin), lacca sends
      the directory with each spawn instead. A given `:cd` is expanded by
      `Path.expand/1` on the calling node, at the same moment: a relative
      path is taken from the BEAM's working directory, `"~"` is the
      BEAM's `HOME` and `""` the BEAM's working directory (also with
      `:node`: give the target an absolute path)
    * `:env` - a map or list of `{name, value}` binaries to set; a `nil` value
      unsets the variable. The process starts from resin's environment (the
      BEAM's environment when resin started), not from later
      `System.put_env/2` calls
    * `:clear_env` - start from an empty environment (default `false`).
      Every process also gets `RESIN_TREE`, the cookie by which resin finds
      its descendants (see "Stopping and cleanup" in the README)
    * `:arg0` - the program name the process sees as `argv[0]`
    * `:stdin` - `:pipe` or `:null` (`/dev/null`). The default: `:pipe` for
      `start/3` and `start_link/3`; for `run/3`, `shell/2` and `stream!/3`,
      `:pipe` with `:input` and `:null` without it
    * `:cgroup` - limits for the process's cgroup (see "Containment"):
      `memory_max: bytes`, `pids_max: n`, `cpu_max: {quota_us, period_us}`.
      When they cannot be applied the spawn fails with `{:cgroup, reason}`:
      `:enotsup` where resin does not use cgroups, `:enoent` where the
      controller is not enabled in resin's cgroup hierarchy
    * `:pty` - run the process on a pseudo-terminal: `true` (24 rows, 80
      columns) or `[rows: r, cols: c]`, either of which may be left out
      (24 and 80) (default `false`). The terminal is
      its stdin, stdout and stderr and its controlling terminal (it is the
      session leader; `isatty/1` is true on 0, 1 and 2), so programs behave
      as in an interactive terminal. stdout and stderr are one stream
      (`:stderr` may only be `:stdout`; `:stdin` not `:null`); the terminal
      echoes input and writes newlines as `"\\r\\n"` unless the program
      changes its modes (`stty raw -echo`). End of input is the terminal's
      EOF character: `close_stdin/1` (and the end of `:input`) sends it, so
      a program reading lines sees end-of-file at the start of a line. Flow
      control is as with pipes. `resize/3` changes the size
    * `:user` - run as this user (a name or a uid); needs resin to run as
      root. The group becomes the user's, and the supplementary groups the
      user's groups (as `initgroups(3)`); the environment is unchanged (set
      `HOME`, `USER` with `:env` if the program needs them) and `:cd` is
      entered as that user (it must be allowed in). Without root
      the spawn fails with `{:user, :eperm}` and nothing starts
    * `:group` - run with this group (a name or a gid), also the only
      supplementary group unless `:user` gives them; needs root
      (`{:group, :eperm}`)
    * `:rlimits` - resource limits set in the process before it starts
      (`setrlimit(2)`): a keyword list of `:as`, `:core`, `:cpu`, `:data`,
      `:fsize`, `:locks`, `:memlock`, `:msgqueue`, `:nice`, `:nofile`,
      `:nproc`, `:rss`, `:rtprio`, `:rttime`, `:sigpending`, `:stack`, each
      a limit (soft and hard) or `{soft, hard}`, integers or `:infinity`:
      `rlimits: [nofile: 1024, core: 0, cpu: {10, 20}]`. Raising a hard
      limit above resin's needs root: `{:rlimit, :eperm}`. The limits apply
      to the program's own loading too: with `nofile` below about 4 the
      dynamic loader cannot open the C library, and the program exits 127
      with that message on its stderr
    * `:daemon` - `:shared` (default: one resin serves many processes) or
      `:dedicated` (a resin of its own, for isolation)
    * `:kill_timeout` - milliseconds between the stop signal and SIGKILL when
      stopping (default `5000`)
    * `:stop_signal` - the signal that asks the process to stop (default
      `:sigterm`)
    * `:node` - the node whose resin starts the process: a node name
      (`:"name@host"`), or `:any` for one of `nodes/0` in turn (default:
      this node). `:lacca` must run there; otherwise the start fails with
      `{:nodedown, node}` or `{:lacca_not_started, node}`. Without `:cd` the
      process starts in the working directory of that node's resin. See
      "Running on other nodes" above
  """

  @stderr_option_doc """
    * `:stderr` - `:capture` (default), `:stdout` (merged into stdout) or
      `:discard`
  """

  # -- run -------------------------------------------------------------------

  @doc """
  Runs `cmd` with `args` to completion and returns its output and status.

  `cmd` is executed directly (no shell): a path, or a name looked up on the
  `PATH`. Use `shell/2` to run a shell command line.

  A name without a `/` is looked up in the process's `PATH`: the one given
  in `:env`, else resin's (the BEAM's `PATH` when that resin started: a
  `System.put_env("PATH", ...)` made after the shared resins started does
  not change it, as for `:env`). A relative path with a
  `/` (`"bin/tool"`, `"./tool"`) is taken from the process's working
  directory, `:cd` when given, as `execve(2)` after `chdir(2)` would:
  `run("./tool", [], cd: dir)` runs `dir/tool`.

  Returns `{:ok, %Lacca.Result{}}` whenever the process ran, whatever its
  exit status, and `{:error, reason}` when it could not run: one of
  `t:spawn_error/0` (`:enoent`, `:eacces`, `{:cwd, :enoent}`, `:emfile`,
  `{:resin_not_found, message}`, `{:resin_failed, failure}`, ...), or
  `:resin_down` when resin died while the process ran.

  The process runs under the calling process: if the caller dies, the
  process (and its process group) is killed.

  ## Options

    * `:input` - iodata written to the process's stdin, which is then closed.
      Without `:input` stdin is `/dev/null` (`stdin: :null`), unless
      `stdin: :pipe` is given (then an empty pipe that is never closed)
    * `:timeout` - milliseconds; when they have passed the process is stopped
      (stop signal, then SIGKILL after `:kill_timeout`) and the result has
      `status: :timeout` and the output written so far (default `:infinity`)
    * `:into` - a `Collectable` for stdout, like `System.cmd/3` (default `""`)
  #{@stderr_option_doc}
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
    spec = Options.run!(opts)

    case Lacca.Remote.target(spec) do
      :local -> Lacca.Runner.run(exec, args, spec)
      {:remote, node} -> Lacca.Remote.run(node, exec, args, spec)
    end
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
  def shell(command, opts \\ [])

  def shell(command, opts) when is_binary(command), do: run("/bin/sh", ["-c", command], opts)

  def shell(command, _opts) do
    raise ArgumentError,
          "expected the command line to be a binary (a string), got: #{inspect(command)}"
  end

  # -- stream -----------------------------------------------------------------

  @stream_options_doc """
    * `:input` - what to write to the process's stdin, which is then closed:
      iodata, or any `Enumerable` of iodata (a `Stream`, `File.stream!/3`,
      ...). It is enumerated in a separate process, concurrently with the
      reading of the output, and only as fast as the process reads its stdin
      (a few 64 KiB frames in flight at most). When the process stops
      reading (it exited or closed its stdin), the rest of the input is
      left alone: that is not an error. An exception raised while
      enumerating the input stops the process and is re-raised in the
      consumer. Without `:input`, stdin is `/dev/null` (or, with
      `stdin: :pipe`, an empty pipe)
    * `:lines` - `false` (default): elements are chunks as the process
      wrote them (up to 65,530 bytes each). `true`: elements are lines, each
      ending with a newline (also across chunk boundaries); a last line
      without newline is yielded as it is when the process exits. A positive
      integer `max` also yields lines, but none longer than `max` bytes
      (newline included): a longer line comes in pieces of exactly `max`
      bytes, the last piece ending with its newline. With `true` a line is
      gathered whole in memory however long it is; an integer bounds that
    * `:stderr` - `:discard` (default: not in the stream, but its last 4 KiB
      are kept for `Lacca.ExitError`), `:stdout` (merged into stdout), or
      `:capture`: elements are then tagged, `{:stdout, data}` and
      `{:stderr, data}` (lines are split per stream)
    * `:max_buffer` - bytes of output read ahead of the consumer, per stream
      (default 1 MiB, at least 1024; see "Flow control" above)
  """

  @stream_flow_doc """
  ## Flow control

  The process's output is read only as fast as the stream is consumed: at most `:max_buffer` bytes per stream are read
  ahead (they wait in the consuming process's mailbox); then resin stops
  reading the process's pipe and the process blocks in `write(2)`. A
  consumer that sleeps holds any producer in bounded memory.

  ## Halting, failing, dying

  Halting the stream early (`Enum.take/2`, `Stream.take_while/2`, an
  exception in the consumer) stops the process group like `stop/2` does
  (stop signal, SIGKILL after `:kill_timeout`) and returns once the process
  is gone; its remaining output is dropped. If the consuming process dies,
  the process group is killed. Nothing is left behind in either case.
  """

  @doc """
  Runs `cmd` with `args` and returns a lazy stream of its stdout: binaries,
  in chunks as the process writes them, or lines with `:lines`.

  The process starts when the stream is enumerated (each enumeration
  starts it again), and its output goes straight to the consuming process:
  there is no process server.

  When the output is consumed and the process did not exit with status 0,
  the stream raises `Lacca.ExitError` with the `:status` (such as `{:exit,
  1}` or `{:signal, :sigkill}`) and the last 4 KiB of stderr, which the
  message shows (kept also with the default `stderr: :discard`; only the
  tail is kept, so memory stays bounded); `stream/3` yields the status
  instead. It
  raises `Lacca.Error` when the process cannot be started (`:enoent`, ...)
  or resin dies.

  #{@stream_flow_doc}

  ## Options

  #{@stream_options_doc}
  #{@spawn_options_doc}

  ## Examples

      iex> Lacca.stream!("printf", ["a\\nb\\nc\\n"]) |> Enum.join()
      "a\\nb\\nc\\n"

      iex> Lacca.stream!("yes", [], lines: true) |> Enum.take(3)
      ["y\\n", "y\\n", "y\\n"]

      iex> Lacca.stream!("tr", ["a-z", "A-Z"], input: Stream.map(~w(a b c), &(&1 <> "\\n")), lines: true)
      ...> |> Enum.to_list()
      ["A\\n", "B\\n", "C\\n"]

      iex> Lacca.stream!("head", ["-c", "10"], input: Stream.repeatedly(fn -> "x" end)) |> Enum.join()
      "xxxxxxxxxx"

      iex> Lacca.stream!("sh", ["-c", "echo out; echo err >&2"], stderr: :capture) |> Enum.sort()
      [{:stderr, "err\\n"}, {:stdout, "out\\n"}]

      iex> Lacca.stream!("sh", ["-c", "echo partial; exit 3"]) |> Enum.to_list()
      ** (Lacca.ExitError) "sh" exited with status 3

      iex> Lacca.stream!("ls", ["/nonexistent"], env: %{"LC_ALL" => "C"}) |> Enum.to_list()
      ** (Lacca.ExitError) "ls" exited with status 2, stderr:
      ls: cannot access '/nonexistent': No such file or directory
  """
  @spec stream!(String.t(), [String.t()], [stream_option()]) :: Enumerable.t()
  def stream!(cmd, args, opts \\ []), do: build_stream(cmd, args, opts, true)

  @doc """
  Like `stream!/3`, but does not raise on the exit status: the last element
  is `{:exit, status}` (`{:exit, 0}`, `{:exit, 3}`, `{:signal, :sigterm}`,
  ...), after all the output.

  It still raises `Lacca.Error` when the process cannot be started or resin
  dies. Halting it early stops the process as `stream!/3` does (then there
  is no `{:exit, status}` element).

  ## Options

  The options of `stream!/3`.

  ## Examples

      iex> Lacca.stream("sh", ["-c", "echo hi; exit 3"]) |> Enum.to_list()
      ["hi\\n", {:exit, {:exit, 3}}]

      iex> Lacca.stream("true", []) |> Enum.to_list()
      [{:exit, {:exit, 0}}]
  """
  @spec stream(String.t(), [String.t()], [stream_option()]) :: Enumerable.t()
  def stream(cmd, args, opts \\ []), do: build_stream(cmd, args, opts, false)

  defp build_stream(cmd, args, opts, bang?) do
    {exec, args} = Options.command!(cmd, args)
    Lacca.Stream.build(exec, args, cmd, Options.stream!(opts), bang?)
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
      `:messages` mode the owner (given or not) is always watched. An owner
      that is already gone starts nothing: `{:error, :owner_down}` (under
      `child_spec/1`, `:ignore`: the supervisor keeps no child, restarts none)
    * `:active` - `:messages` mode only, as for a `:gen_tcp` socket (see
      `set_active/2`):
        * `:flow` (default): every chunk is sent to the owner as it
          arrives, while the owner keeps up: when more than 64 messages
          wait in its queue, resin gets no more credit until it caught up
          (see "Flow control" in the module documentation). Messages of
          any kind count: an owner that leaves many others unread holds
          the process too. An owner on another node is bounded alike: its
          queue's length is asked of its node, a round trip per grant (not
          on a node that cannot run `:erpc`, such as a C node: see "Flow
          control")
        * `true`: every chunk is sent to the owner as it arrives (no limit on
          the owner's mailbox, as before `:flow`)
        * a positive integer `n`: `n` chunks are sent, then
          `{:lacca, pid, :passive}`, and the server is passive until
          `set_active/2`
        * `:once`: one chunk, then passive (no `:passive` message)
        * `false`: passive, nothing is sent
      While passive, output waits in the server, at most `:max_buffer`
      bytes per stream: then resin gets no more credit and the OS process
      blocks in `write(2)` until the owner asks for more. The final
      `{:exit, status}` message comes after every chunk was delivered
    * `:max_buffer` - bytes of output that may wait per stream (default 1
      MiB, at least 1024: a smaller window would cost a credit round trip
      for every few bytes): the credit resin gets for the process (see "Flow
      control" in the module documentation)
    * `:name` - registers the server under a name, in any `GenServer` form
      (an atom, `{:global, term}`, `{:via, module, term}`); every function
      that takes the server's pid also takes the name. A name in use makes
      the start return `{:error, {:already_started, pid}}`
    * `:log_output` - a Logger level (`:info`, `:debug`, ...): stdout goes
      to the `Logger` line by line instead of the buffer or the owner, like
      `MuonTrap.Daemon`'s option of the same name (default `nil`: not
      logged). Each message is a line without its newline, prefixed with
      `:log_prefix`, with the metadata `os_pid`, `cmd` and `lacca_stream`
      (`:stdout` or `:stderr`). A line longer than 4,096 bytes is logged in
      pieces of 4,096 bytes, so a process that never writes a newline holds
      at most that much in the server; an unfinished last line is logged at
      the exit. Output is logged as fast as it comes (it is not held back by
      flow control)
    * `:log_prefix` - the prefix of each logged line (default: the command
      and `": "`, such as `"redis-server: "`)
    * `:log_stderr` - `true` logs stderr too, at the same level (default
      `false`: stderr is buffered or sent as without `:log_output`); needs
      `stderr: :capture`
  #{@stderr_option_doc}
  #{@spawn_options_doc}

  ## Lifetime of the server

  The server follows its OS process: it ends once the OS process has exited
  and its output has been handed over.

    * `:messages` mode: right after the final `{:exit, status}` message
    * `:buffer` mode: once the output was read to its end, that is when,
      after the exit, `read_stdout/2` or `read_stderr/2` returns `{:ok, ""}`
      with nothing left in either buffer (also a read that was waiting when
      the process exited). Until then the output, `await/2` and `status/1`
      can still be read. When nobody can read the output, the server ends
      at the exit at once: a server started by `child_spec/1` (under a
      supervisor, which reads nothing: its unread output is dropped), and
      one with nothing buffered (`log_output:` with `log_stderr: true`, or
      with stderr not captured)
    * `stop/2` ends the server as soon as the OS process is gone, whatever
      is left unread

  Its exit reason tells how the OS process ended:

  | the OS process | the server's exit reason |
  |---|---|
  | exited with status 0 | `:normal` |
  | exited with status `n` > 0 | `{:exit_status, n}` |
  | was killed by a signal | `{:signal, name}` (such as `{:signal, :sigkill}`) |
  | was killed because resin died | `:resin_down` |
  | was stopped with `stop/2` | `:normal` |

  So a supervisor's `:transient` restarts a process that failed or was
  killed (also with `kill -9` from outside, or with its resin) and
  `:permanent` restarts it always, `:temporary` never. A monitor's `:DOWN` message carries the same
  reason. Any reason other than `:normal` is an abnormal exit in OTP's
  terms: it is logged as a crash report (by the server and by its
  supervisor), and it kills a process linked to the server (the caller of
  `start_link/3`) unless that process traps exits.

  Once the server is gone: `await/2`, `write_stdin/3`, `close_stdin/1`,
  `signal/3`, `read_stdout/2` and `read_stderr/2` return `{:error, :noproc}`,
  `stop/2` and `kill/1` return `:ok`, `alive?/1` returns `false`,
  `status/1` and `os_pid/1` return `nil`.
  """
  @spec start(String.t(), [String.t()], [start_option()]) ::
          {:ok, pid()} | {:error, spawn_error() | :owner_down | {:already_started, pid()}}
  def start(cmd, args, opts \\ []), do: do_start(cmd, args, opts, false)

  @doc """
  Like `start/3`, but the process server is linked to the caller.

  When the caller exits, the server stops the OS process (gracefully, as
  `stop/1` does) and exits too, and the whole process group goes with it.

  The link works both ways: when the OS process exits with a status other
  than 0 or is killed by a signal, the server exits with `{:exit_status, n}`
  or `{:signal, name}` (see "Lifetime of the server" in `start/3`), and so
  does the caller, unless it traps exits (then it receives `{:EXIT, pid,
  reason}`). Use `start/3` and a monitor to watch a process without that.

  ## Options

  The options of `start/3`.
  """
  @spec start_link(String.t(), [String.t()], [start_option()]) ::
          {:ok, pid()} | {:error, spawn_error() | :owner_down | {:already_started, pid()}}
  def start_link(cmd, args, opts \\ []), do: do_start(cmd, args, opts, true)

  defp do_start(cmd, args, opts, link?) do
    {exec, args} = Options.command!(cmd, args)
    start_on(exec, args, Options.start!(opts), link?)
  end

  defp start_on(exec, args, spec, link?) do
    case Lacca.Remote.target(spec) do
      :local -> Lacca.Process.start(exec, args, spec, link?)
      {:remote, node} -> Lacca.Remote.start(node, exec, args, spec, link?)
    end
  end

  @doc """
  A child specification to run an OS process in a supervision tree.

  ## Options

    * `:cmd` - the command (required)
    * `:args` - its arguments (default `[]`)
    * `:id`, `:restart`, `:shutdown` - as in `Supervisor.child_spec/2`
      (`:restart` defaults to `:permanent`, `:shutdown` to `:kill_timeout`
      plus 2 seconds)
    * any option of `start/3`. `output: :messages` needs an `:owner`: the
      supervisor would get the messages otherwise (an `ArgumentError`)

  The server ends when its OS process ends, with an exit reason that tells
  how (see "Lifetime of the server" in `start/3`): `:normal` for status 0,
  `{:exit_status, n}` or `{:signal, name}` otherwise. So `restart:
  :transient` restarts a process that failed or was killed, `:permanent`
  restarts it whenever it ends, `:temporary` never. The supervisor reads no
  output, so the process never waits for a reader: only the latest
  `:max_buffer` bytes or so of each stream are kept (readable by pid or
  `:name`), and they are dropped when the process exits; use `:log_output`
  to keep all of it.

  ## Examples

      children = [{Lacca, cmd: "sh", args: ["-c", "sleep 1; exit 3"], restart: :transient}]
      {:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one)
      # restarted after each exit 3, until the supervisor's max_restarts

      children = [
        {Lacca,
         cmd: "sh",
         args: ["-c", "echo ready; exec sleep 1000"],
         name: MyApp.Sleeper,
         log_output: :info,
         log_stderr: true}
      ]

      {:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one)
      # logs "sh: ready" with metadata os_pid: ..., cmd: "sh"
      Lacca.os_pid(MyApp.Sleeper)
  """
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) when is_list(opts) do
    {cmd, opts} = Keyword.pop(opts, :cmd)
    {args, opts} = Keyword.pop(opts, :args, [])
    {spec_opts, opts} = Keyword.split(opts, [:id, :restart, :shutdown])

    if cmd == nil, do: raise(ArgumentError, "Lacca.child_spec/1 needs the :cmd option")
    _ = Options.command!(cmd, args)
    start = Options.start!(opts)

    if start.output == :messages and start.owner == nil do
      raise ArgumentError,
            "Lacca.child_spec/1 with output: :messages needs an :owner (a pid): " <>
              "the supervisor would receive the messages"
    end

    %{
      id: Keyword.get(spec_opts, :id, Lacca),
      start: {Lacca, :start_supervised, [cmd, args, opts]},
      restart: Keyword.get(spec_opts, :restart, :permanent),
      shutdown: Keyword.get(spec_opts, :shutdown, start.kill_timeout + 2_000),
      type: :worker,
      modules: [Lacca]
    }
  end

  @doc false
  # The start function of child_spec/1: start_link/3 for a supervisor, which
  # reads no output (the server ends at once when its OS process exits).
  @spec start_supervised(String.t(), [String.t()], [start_option()]) ::
          {:ok, pid()} | {:error, spawn_error()} | :ignore
  def start_supervised(cmd, args, opts) do
    {exec, args} = Options.command!(cmd, args)
    start_on(exec, args, %{Options.start!(opts) | supervised: true}, true)
  end

  # -- reading ----------------------------------------------------------------

  @doc """
  Returns and clears what the process wrote to stdout (`output: :buffer`).

  When nothing is buffered it waits until output arrives, the process exits,
  or `timeout` milliseconds (default 1,000) passed, and then returns `{:ok,
  ""}`. A process blocked because its buffer is full continues once it has
  been read.

  Unlike lacca 0.2.3, whose `read_stdout/1` returned at once with whatever
  was buffered (often `""` right after a start), it waits up to `timeout`
  when nothing is buffered yet: `read_stdout(pid, 0)` returns at once, as
  0.2.3 did.

  Raises `ArgumentError` for a process started with `output: :messages`.
  """
  @spec read_stdout(server(), timeout()) :: {:ok, binary()} | {:error, :noproc | :noconnection}
  def read_stdout(pid, timeout \\ 1_000), do: read(pid, :stdout, timeout)

  @doc """
  Returns and clears what the process wrote to stderr, like `read_stdout/2`.
  """
  @spec read_stderr(server(), timeout()) :: {:ok, binary()} | {:error, :noproc | :noconnection}
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

  `:flow` delivers everything while the owner keeps up (the default),
  `true` everything, `:once` one chunk, `false` nothing; an integer
  is added to the current count (like `{:active, n}` in `:gen_tcp`): when the
  count reaches zero the owner gets `{:lacca, pid, :passive}`. While no output
  is delivered, resin gets no more credit: the process blocks once its
  `:max_buffer` is used.
  """
  @spec set_active(server(), active() | integer()) :: :ok | {:error, :noproc | :noconnection}
  def set_active(pid, active)
      when is_boolean(active) or active in [:once, :flow] or is_integer(active) do
    case call(pid, {:set_active, active}) do
      {:error, :not_messages} ->
        raise ArgumentError, "set_active/2 needs a process started with output: :messages"

      other ->
        other
    end
  end

  def set_active(_pid, active) do
    raise ArgumentError,
          "expected active to be :flow, true, false, :once or an integer, got: " <>
            inspect(active)
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

  `timeout` (milliseconds, default `:infinity`) bounds the wait: when the
  process has not taken all of `data` in time, `{:error, :timeout}` is
  returned and the rest of `data` is dropped, except the frames already
  handed to resin (at most four of 65,530 bytes, the first of `data` not
  yet written): those are still written, in order, when the process reads
  its stdin. So after a timeout the process may get a prefix of `data`,
  never a piece from its middle; later writes come after that prefix.
  """
  @spec write_stdin(server(), iodata(), timeout()) ::
          :ok
          | {:error,
             :epipe | :closed | :exited | :resin_down | :timeout | :noproc | :noconnection}
  def write_stdin(pid, data, timeout \\ :infinity) do
    check_timeout!(timeout)
    iodata!(data)
    call(pid, {:write, data, timeout})
  end

  defp iodata!(data) do
    IO.iodata_length(data)
  rescue
    ArgumentError -> raise ArgumentError, "expected data to be iodata, got: #{inspect(data)}"
  end

  @doc """
  Closes the process's stdin (the process reads end-of-file) after every
  write queued before it was written. Returns once resin closed the pipe.

  On a terminal (`:pty`) there is no pipe to close: resin writes the
  terminal's EOF character (`VEOF`, usually Ctrl-D) and takes no more input.
  A program reading lines then reads end-of-file if the EOF character comes
  at the start of a line (after a newline); after a partial line it only
  ends that line. A program that turned off canonical mode (`stty raw`)
  reads it as a byte.
  """
  @spec close_stdin(server()) ::
          :ok | {:error, :exited | :resin_down | :noproc | :noconnection}
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
  Sets the window size of a process started with `:pty` to `rows` and
  `cols` (`TIOCSWINSZ`); the kernel sends `SIGWINCH` to the terminal's
  foreground process group when the size changed.

  Returns `{:error, :not_a_pty}` for a process without terminal and
  `{:error, :exited}` when the process (or its terminal) is gone. Raises
  `ArgumentError` unless `rows` and `cols` are integers 1..65535.

  ## Examples

      {:ok, pid} = Lacca.start("vim", ["notes.txt"], pty: [rows: 24, cols: 80])
      :ok = Lacca.resize(pid, 50, 132)
  """
  @spec resize(server(), pos_integer(), pos_integer()) ::
          :ok | {:error, :not_a_pty | :exited | :resin_down | :noproc | atom()}
  def resize(pid, rows, cols) do
    {rows, cols} = Options.winsize!(rows, cols)
    call(pid, {:resize, rows, cols})
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
  message), `{:error, :noconnection}` when the server's node went away (see
  "Running on other nodes").
  """
  @spec await(server(), timeout()) ::
          {:ok, status()} | {:error, :timeout | :resin_down | :noproc | :noconnection}
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
      {:error, _} -> nil
      os_pid -> os_pid
    end
  end

  @doc """
  The connected nodes where the `:lacca` application runs, this one
  included, sorted: the nodes `node:` can name, and among which `node:
  :any` picks.

  Each node's `:lacca` joins a `:pg` group when it starts and leaves it
  when it stops (or its node disconnects), so the list follows the
  cluster as distributed Erlang sees it. Nodes are not connected by lacca:
  connect them as usual (`Node.connect/1`, `libcluster`, ...). A node
  just connected shows up once `:pg` has synchronized with it.

      iex> node() in Lacca.nodes()
      true
  """
  @spec nodes() :: [node()]
  def nodes do
    Lacca.Daemon.ensure_started!()
    Lacca.Cluster.nodes()
  end

  @typedoc "How resin contains the processes it starts (see \"Containment\")."
  @type containment :: :cgroup2 | :process_tree

  @doc """
  What runs OS processes on this node: the resin executable and how it
  contains the processes it starts (`:cgroup2`, or `:process_tree` where
  cgroups cannot be used or `config :lacca, :cgroups, false`).

  It finds out by starting one short process (`cat /proc/self/cgroup`).

      iex> {:ok, %{containment: c}} = Lacca.info()
      iex> c in [:cgroup2, :process_tree]
      true
  """
  @spec info() ::
          {:ok, %{resin: String.t(), containment: containment()}} | {:error, spawn_error()}
  def info do
    with {:ok, resin} <- Lacca.Resin.find(),
         {:ok, %Lacca.Result{stdout: cgroups}} <- run("cat", ["/proc/self/cgroup"]) do
      containment = if cgroups =~ ~r{^0::.*/resin-\d+/c\d+$}m, do: :cgroup2, else: :process_tree
      {:ok, %{resin: resin, containment: containment}}
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

    # The server ended during the call, with the OS process.
    :exit, {{tag, _}, {GenServer, :call, _}} when tag in [:exit_status, :signal] ->
      {:error, :noproc}

    :exit, {:resin_down, {GenServer, :call, _}} ->
      {:error, :noproc}

    # A server on another node, which went away with its node.
    :exit, {:noconnection, {GenServer, :call, _}} ->
      {:error, :noconnection}

    :exit, {{:nodedown, _}, {GenServer, :call, _}} ->
      {:error, :noconnection}
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
