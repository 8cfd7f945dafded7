defmodule Lacca.Process do
  @moduledoc false
  # One GenServer per OS process started with Lacca.start/3 or start_link/3.
  #
  # The daemon routes the frames about our id straight to us; we write STDIN,
  # CREDIT and CONTROL frames to the port ourselves, through our
  # Lacca.Channel (which owns the wire). Every handle_info clause matches our
  # own port and id (and daemon monitor ref), so frames of an older process
  # or another port can never be taken for ours.
  #
  # In :messages mode with `active: true` or `:flow` (and no log_output) the
  # daemon delivers output straight to the owner, and the final {:exit, _}
  # or {:error, :resin_down} after it ("direct", Lacca.Daemon.spawn_async/6): we
  # only hear how many bytes went (Channel.sent/4) and keep the credit and
  # control. Any other active mode, and our own termination, hand delivery
  # back to us for good (leave_direct/1).
  #
  # Where stdout can be read from the child's pipe directly (Lacca.Channel,
  # "direct output": :messages mode, active: true or :flow, no log_output, a
  # local owner, no pty), it is: an fd port sends it to us and we send it on
  # to the owner (the daemon then delivers only stderr, through us), and at
  # the exit the last of it goes before the {:exit, _}. With active: :flow
  # the reader is paused while the owner is behind, as credit is withheld.
  # Any other active mode, and our termination, leave it for good
  # (leave_direct/1: resin reads the pipe from then on).
  #
  # `active: :flow` (the default) is `true` with bounded memory: before a
  # credit grant goes to resin, the owner's message queue is looked at; above
  # @flow_backlog messages the grant is withheld (the OS process blocks once
  # its :max_buffer is used) and looked at again on a timer, backing off from
  # @flow_check_first to @flow_check_max ms, until the owner caught up.
  # An owner on another node is asked, not looked at: the grant is held
  # while an :erpc request (process_info on the owner's node, at most one
  # in flight) is answered, and the server goes on meanwhile; no answer
  # (the node or the owner gone, a node without :erpc such as a C node:
  # {:erpc, :notsup}) counts as caught up (ask_owner/2).
  #
  # Callers that have to wait (read_stdout with an empty buffer, await,
  # write_stdin until its frames are acked, close_stdin, signal, stop) are
  # parked and answered with GenServer.reply/2 when the answer arrives.

  use GenServer

  require Logger

  alias Lacca.{Channel, Daemon, Lines}

  require Channel

  # log_output: the longest line logged in one message; a longer line is
  # logged in pieces of this size (Lacca.Lines), so a child that never
  # writes a newline costs at most this much memory here.
  @log_line_max 4_096

  # active: :flow. Above this many messages in the owner's queue no more
  # credit goes to resin: with chunks of at most 64 KiB that bounds the
  # owner's mailbox at about 4 MiB plus :max_buffer per stream, while an
  # owner that keeps up (a few chunks queued) never sees it.
  @flow_backlog 64
  # While credit is withheld, the owner's queue is looked at again after
  # this many ms, doubling up to @flow_check_max: prompt for an owner that
  # catches up, cheap for one that sleeps.
  @flow_check_first 1
  @flow_check_max 64

  @type stream :: :stdout | :stderr
  @type status :: Channel.status() | :resin_down
  @type from :: GenServer.from()
  @type active :: boolean() | :flow | :once | pos_integer()

  @typedoc "A call waiting for resin's reply to a CONTROL request."
  @type call :: {:signal | :close | :kill | :resize, from()} | :ignore

  @typedoc "A write_stdin call waiting for the acks of its frames."
  @type write :: %{from: from(), remaining: pos_integer(), error: atom() | nil}

  @typedoc "A queued stdin item: a frame of a write, or a close_stdin call."
  @type stdin_item :: {:frame, reference(), binary()} | {:close, from()}

  @typedoc "What a parked call's timer is for."
  @type parked :: :await | :write | {:read, stream()}

  @enforce_keys [:starter, :tag, :link, :owner, :mode, :log_prefix, :kill_timeout, :stop_signal]
  defstruct [
    :starter,
    :tag,
    :link,
    :owner,
    :mode,
    :log_prefix,
    :kill_timeout,
    :stop_signal,
    phase: :spawning,
    owner_mref: nil,
    # ends :normal whatever the status (Lacca.Options :quiet)
    quiet: false,
    # false when nobody can read the buffered output (a supervised child:
    # its starter is a supervisor): the server then ends at the exit
    readable: true,
    # log_output: %{stream => Lacca.Lines state} for the streams logged
    log: %{},
    log_level: nil,
    log_meta: [],
    # the wire (Lacca.Channel), once the daemon took the spawn
    chan: nil,
    os_pid: nil,
    # nil while running; {:exit, n} | {:signal, s} | :resin_down when over
    status: nil,
    # :buffer mode: {iodata, size} per stream, and parked readers
    buf: %{stdout: {[], 0}, stderr: {[], 0}},
    readers: %{stdout: [], stderr: []},
    # :messages mode
    active: :flow,
    # output goes from the daemon straight to the owner (see the top)
    direct: false,
    daemon: nil,
    # active: :flow while credit is withheld: {timer ref, delay}, or
    # {:ask, delay} while a remote owner is asked (flow_ask)
    flow: nil,
    # {:erpc, request id} in flight to a remote owner's node, if any
    flow_ask: nil,
    pending: :queue.new(),
    exit_pending: false,
    # stdin: queued items, refs of unacked frames in order, writes by ref
    stdin: :open,
    stdin_q: :queue.new(),
    inflight: :queue.new(),
    inflight_n: 0,
    writes: %{},
    # ref => {:signal | :close | :kill | :resize, from} | :ignore  (resin replies)
    calls: %{},
    # parked await callers and timers of parked calls
    awaiters: [],
    timers: %{},
    stoppers: [],
    kill_timer: nil
  ]

  @typedoc "The server's state."
  @type t :: %__MODULE__{
          starter: pid(),
          tag: reference(),
          link: boolean(),
          owner: pid(),
          mode: :buffer | :messages,
          log_prefix: iodata(),
          kill_timeout: non_neg_integer(),
          stop_signal: pos_integer(),
          phase: :spawning | :running | :done,
          owner_mref: reference() | nil,
          quiet: boolean(),
          readable: boolean(),
          log: %{optional(stream()) => Lines.t()},
          log_level: Logger.level() | nil,
          log_meta: keyword(),
          chan: Channel.t() | nil,
          os_pid: pos_integer() | nil,
          status: status() | :spawn_error | nil,
          buf: %{stdout: {iodata(), non_neg_integer()}, stderr: {iodata(), non_neg_integer()}},
          readers: %{stdout: [{reference(), from()}], stderr: [{reference(), from()}]},
          active: active(),
          direct: boolean(),
          daemon: pid() | nil,
          flow: {reference() | :ask, pos_integer()} | nil,
          flow_ask: {:erpc, :erpc.request_id()} | nil,
          pending: :queue.queue({stream(), binary()}),
          exit_pending: boolean(),
          stdin: :open | :closing | :closed,
          stdin_q: :queue.queue(stdin_item()),
          inflight: :queue.queue(reference()),
          inflight_n: non_neg_integer(),
          writes: %{optional(reference()) => write()},
          calls: %{optional(reference()) => call()},
          awaiters: [{reference(), from()}],
          timers: %{optional(reference()) => {reference(), parked()}},
          stoppers: [from()],
          kill_timer: {reference(), reference()} | nil
        }

  # -- starting ------------------------------------------------------------

  @typedoc "What the server starts from: command, arguments, options, starter, tag, link?."
  @type arg :: {binary(), [binary()], Lacca.Options.t(), pid(), reference(), boolean()}

  # A running server's heap is ~990 words (its state, the channel, the
  # options); with the default 233 its start made two or three garbage
  # collections on the way there (the start's arguments, init/1's state,
  # the spawn answer). Starting at this size makes none, for no more memory
  # than a running server holds anyway.
  @spawn_opt [min_heap_size: 987]

  @spec child_spec(arg()) :: Supervisor.child_spec()
  def child_spec({_exec, _args, spec, _starter, _tag, _link} = arg) do
    %{
      id: __MODULE__,
      start: {__MODULE__, :start_link, [arg]},
      restart: :temporary,
      shutdown: spec.kill_timeout + 2_000
    }
  end

  @spec start_link(arg()) :: GenServer.on_start()
  def start_link({_exec, _args, spec, _starter, _tag, _link} = arg) do
    case spec.name do
      nil -> GenServer.start_link(__MODULE__, arg, spawn_opt: @spawn_opt)
      name -> GenServer.start_link(__MODULE__, arg, name: name, spawn_opt: @spawn_opt)
    end
  end

  # Runs in the caller: starts the server under Lacca.ProcessSupervisor and
  # waits until resin reported the spawn (or its failure).
  @spec start(binary(), [binary()], Lacca.Options.t(), boolean()) ::
          {:ok, pid()} | {:error, term()} | :ignore
  def start(exec, args, spec, link?) do
    Lacca.Daemon.ensure_started!()
    tag = make_ref()
    child = {__MODULE__, {exec, args, spec, self(), tag, link?}}

    case DynamicSupervisor.start_child(Lacca.ProcessSupervisor, child) do
      {:ok, pid} ->
        mref = Process.monitor(pid)

        receive do
          {^tag, :ok} ->
            Process.demonitor(mref, [:flush])
            {:ok, pid}

          {^tag, {:error, reason}} ->
            Process.demonitor(mref, [:flush])
            {:error, reason}

          {:DOWN, ^mref, :process, _, reason} ->
            {:error, reason}
        end

      {:error, reason} ->
        {:error, reason}

      :ignore ->
        :ignore
    end
  catch
    :exit, {:noproc, _} ->
      raise "the :lacca application is not started: add :lacca to your project's " <>
              "dependencies or call Application.ensure_all_started(:lacca)"
  end

  @impl true
  # An :owner that is already gone: nothing to run. Under the caller's own
  # supervisor (child_spec/1) that is :ignore, so that a restart after the
  # owner died does not start the process and kill it again, in a loop.
  def init({_exec, _args, spec, _starter, _tag, _link?} = args) do
    owner = spec.owner

    cond do
      not (is_pid(owner) and node(owner) == node()) or Process.alive?(owner) -> init_alive(args)
      spec.supervised -> :ignore
      true -> {:stop, :owner_down}
    end
  end

  defp init_alive({exec, args, spec, starter, tag, link?}) do
    owner = spec.owner || starter
    direct_owner = direct_owner(spec, owner)

    # Direct output: stdout from the pipe to us, and everything else too
    # (the exit must come after the pipe's last data).
    {spawn_opts, direct_owner} =
      case direct_owner && Channel.direct_opts(spec.spawn) do
        [_ | _] = direct -> {spec.spawn ++ direct, nil}
        _ -> {spec.spawn, direct_owner}
      end

    spec = %{spec | spawn: spawn_opts}

    # To a shared daemon the request leaves first, so that resin spawns
    # while the rest of the start runs (this init, the supervisor's reply);
    # handle_continue/2 collects the answer.
    pending =
      if spec.daemon == :shared,
        do:
          Daemon.spawn_async(Daemon.pick(), exec, args, spec.spawn, spec.max_buffer, direct_owner)

    Process.flag(:trap_exit, true)

    owner_mref =
      if spec.owner != nil or spec.output == :messages, do: Process.monitor(owner), else: nil

    # Started from another node (node:) and bound to nobody: it goes when
    # its starter's node goes, so that a netsplit orphans nothing.
    if owner_mref == nil and node(starter) != node(), do: Node.monitor(node(starter), true)

    {log, readable} = log_setup(spec)

    state = %__MODULE__{
      starter: starter,
      tag: tag,
      link: link?,
      owner: owner,
      owner_mref: owner_mref,
      quiet: spec.quiet,
      mode: spec.output,
      readable: readable,
      log: log,
      log_level: spec.log_output,
      log_prefix: spec.log_prefix || exec <> ": ",
      log_meta: [cmd: exec],
      kill_timeout: spec.kill_timeout,
      stop_signal: spec.stop_signal,
      active: spec.active
    }

    {:ok, state, {:continue, {:spawn, pending, exec, args, spec, direct_owner}}}
  end

  # In :messages mode with `active: true` or `:flow` and no log_output, the
  # owner to which the daemon delivers output (see the top). Only a local
  # one: a send to another node can block the sender (a busy distribution
  # port), and the daemon is shared.
  defp direct_owner(spec, owner) do
    if spec.output == :messages and spec.active in [true, :flow] and spec.log_output == nil and
         node(owner) == node(),
       do: owner
  end

  # Which streams go to the Logger, and whether anybody can read the output
  # left in the buffers after the exit.
  defp log_setup(spec) do
    stderr =
      case List.keyfind(spec.spawn, :stderr, 0) do
        {:stderr, mode} -> mode
        nil -> :capture
      end

    logged =
      case spec.log_output do
        nil -> []
        _ -> if spec.log_stderr, do: [:stdout, :stderr], else: [:stdout]
      end

    log = Map.new(logged, &{&1, Lines.new(@log_line_max)})

    buffered =
      Enum.reject([:stdout | if(stderr == :capture, do: [:stderr], else: [])], &(&1 in logged))

    {log, buffered != [] and not spec.supervised}
  end

  @impl true
  # Waits, as a start does, until the OS process runs or failed to spawn
  # (a call that arrives meanwhile waits in the mailbox).
  def handle_continue({:spawn, pending, exec, args, spec, direct_owner}, state) do
    result =
      case pending do
        nil ->
          with {:ok, daemon} <- Daemon.start_dedicated(self()) do
            daemon
            |> Daemon.spawn_async(exec, args, spec.spawn, spec.max_buffer, direct_owner)
            |> Daemon.await_spawn()
          end

        pending ->
          Daemon.await_spawn(pending)
      end

    case result do
      {:ok, dpid, port, id, os_pid, direct} ->
        chan = port |> Channel.open(id, dpid, spec.max_buffer) |> Channel.open_direct(direct)
        state = %{state | chan: chan, direct: direct_owner != nil, daemon: dpid}
        event({:spawned, id, os_pid}, state)

      {:error, reason} ->
        send(state.starter, {state.tag, {:error, reason}})
        {:stop, :normal, %{state | phase: :done, status: :spawn_error}}
    end
  end

  # -- frames from resin (via the daemon) -------------------------------------

  @impl true
  def handle_info(Channel.stdout(port, id, data), %{chan: %Channel{port: port, id: id}} = s),
    do: {:noreply, output(:stdout, data, s)}

  def handle_info(Channel.stderr(port, id, data), %{chan: %Channel{port: port, id: id}} = s),
    do: {:noreply, output(:stderr, data, s)}

  def handle_info(Channel.stdin_ack(port, id, code), %{chan: %Channel{port: port, id: id}} = s),
    do: {:noreply, s |> acked(Channel.ack_status(code)) |> pump()}

  # Direct output: the child's pipe, read by our fd port.
  def handle_info(Channel.direct_data(dport, data), %{chan: %Channel{dport: dport}} = s)
      when is_port(dport) do
    send(s.owner, {:lacca, self(), {:stdout, data}})
    {:noreply, direct_flow(s)}
  end

  # Direct delivery: the daemon sent these bytes to the owner.
  def handle_info(Channel.sent(port, id, out, err), %{chan: %Channel{port: port, id: id}} = s),
    do: {:noreply, s |> delivered(:stdout, out) |> delivered(:stderr, err)}

  def handle_info({:flow_check, ref}, %{flow: {ref, delay}} = s) do
    delay = min(2 * delay, @flow_check_max)

    cond do
      node(s.owner) != node() -> {:noreply, ask_owner(s, delay)}
      backlogged?(s.owner) -> {:noreply, flow_timer(s, delay)}
      true -> {:noreply, release(s)}
    end
  end

  def handle_info(Channel.event(port, event), %{chan: %Channel{port: port, id: id}} = s)
      when elem(event, 1) == id,
      do: event(event, s)

  # A daemon that stopped sent a direct owner its {:error, :resin_down};
  # one that was killed could not.
  def handle_info({:DOWN, mref, :process, _, reason}, %{chan: %Channel{dmref: mref}} = s) do
    s = direct_end(s)
    resin_down(if reason == :killed, do: %{s | direct: false}, else: s)
  end

  # The owner is gone: stop the OS process (terminate/2 does it gracefully).
  def handle_info({:DOWN, mref, :process, _, _}, %{owner_mref: mref} = s),
    do: {:stop, :normal, %{s | owner_mref: nil}}

  def handle_info({:EXIT, pid, reason}, %{link: true, starter: pid} = s),
    do: {:stop, owner_exit_reason(reason), s}

  def handle_info({:nodedown, node}, %{owner_mref: nil, starter: starter} = s)
      when node(starter) == node,
      do: {:stop, {:shutdown, {:nodedown, node}}, s}

  def handle_info({:timeout, ref}, s), do: {:noreply, timed_out(ref, s)}

  def handle_info({:kill_timeout, ref}, %{kill_timer: {ref, _}} = s) do
    s =
      if s.status == nil,
        do: s |> unthrottle() |> signal_ref(Channel.sigkill(), true, :ignore),
        else: s

    {:noreply, %{s | kill_timer: nil}}
  end

  # The answer of a remote owner's node (or a failure to get one), else a
  # message of nobody's.
  def handle_info(msg, %{flow_ask: {:erpc, req}} = s) do
    case owner_answer(msg, req) do
      :no_response -> {:noreply, s}
      backlogged -> {:noreply, answered(%{s | flow_ask: nil}, backlogged)}
    end
  end

  def handle_info(_other, s), do: {:noreply, s}

  defp event({:spawned, _id, os_pid}, %{phase: :spawning} = s) do
    if s.link, do: Process.link(s.starter)
    send(s.starter, {s.tag, :ok})
    {:noreply, %{s | phase: :running, os_pid: os_pid, log_meta: [{:os_pid, os_pid} | s.log_meta]}}
  end

  defp event({:spawn_error, _id, reason}, s) do
    send(s.starter, {s.tag, {:error, reason}})
    {:stop, :normal, %{s | phase: :done, status: :spawn_error}}
  end

  defp event({:reply, _id, ref, result}, s) do
    {what, calls} = Map.pop(s.calls, ref)
    s = %{s | calls: calls}

    case what do
      {:signal, from} ->
        GenServer.reply(from, signal_result(result))
        {:noreply, s}

      {:kill, from} ->
        GenServer.reply(from, :ok)
        {:noreply, s}

      {:resize, from} ->
        GenServer.reply(from, resize_result(result))
        {:noreply, s}

      {:close, from} ->
        GenServer.reply(from, close_result(result))
        {:noreply, %{s | stdin: :closed}}

      _ ->
        {:noreply, s}
    end
  end

  defp event({:exit, _id, status}, s) do
    # The pipe is empty: the last direct data (in our mailbox) goes first.
    s = direct_end(s)

    finish(%{s | status: Channel.exit_status(status), chan: Channel.close(s.chan)})
  end

  # Direct output handed over (direct_after): every relayed frame came first.
  # Declined (resin goes on relaying) when the active mode changed since
  # the spawn: only true and :flow take it (see the top).
  defp event({:direct, _id, direct}, %{active: active} = s) when active in [true, :flow],
    do: {:noreply, %{s | chan: Channel.open_direct(s.chan, direct)}}

  defp event({:direct, _id, _direct}, s),
    do: {:noreply, %{s | chan: Channel.send_relay(s.chan)}}

  defp event({:error, _id, reason}, s) do
    require Logger
    Logger.warning("lacca: resin reported an error for os pid #{s.os_pid}: #{inspect(reason)}")
    {:noreply, s}
  end

  defp event(_other, s), do: {:noreply, s}

  defp resin_down(%{phase: :spawning} = s) do
    send(s.starter, {s.tag, {:error, :resin_down}})
    {:stop, :normal, %{s | phase: :done}}
  end

  defp resin_down(s),
    do: finish(%{s | status: :resin_down, chan: Channel.close(%{s.chan | dmref: nil})})

  # The OS process is over (or resin is gone): answer everybody.
  defp finish(s) do
    cancel_kill_timer(s)
    s = flush_log(s)
    result = if s.status == :resin_down, do: {:error, :resin_down}, else: {:ok, s.status}
    Enum.each(s.awaiters, fn {ref, from} -> reply_parked(s, ref, from, result) end)

    # Parked readers get the end of the stream: somebody read to the end.
    eof_read = s.readers.stdout != [] or s.readers.stderr != []

    for stream <- [:stdout, :stderr], {ref, from} <- s.readers[stream] do
      reply_parked(s, ref, from, {:ok, ""})
    end

    failure = if s.status == :resin_down, do: :resin_down, else: :exited
    Enum.each(s.writes, fn {_, w} -> GenServer.reply(w.from, {:error, w.error || failure}) end)

    Enum.each(s.calls, fn
      {_, {:kill, from}} -> GenServer.reply(from, :ok)
      {_, {_, from}} -> GenServer.reply(from, {:error, failure})
      _ -> :ok
    end)

    for {:close, from} <- :queue.to_list(s.stdin_q), do: GenServer.reply(from, {:error, failure})
    Enum.each(s.stoppers, &GenServer.reply(&1, :ok))

    s = %{
      s
      | phase: :done,
        awaiters: [],
        readers: %{stdout: [], stderr: []},
        writes: %{},
        calls: %{},
        stdin_q: :queue.new(),
        inflight: :queue.new(),
        inflight_n: 0,
        timers: %{},
        kill_timer: nil
    }

    cond do
      s.stoppers != [] ->
        if s.mode == :messages, do: notify_end(s)
        {:stop, :normal, %{s | stoppers: []}}

      s.mode == :messages ->
        deliver(%{s | exit_pending: true})

      not s.readable or (eof_read and drained?(s)) ->
        {:stop, exit_reason(s), s}

      true ->
        {:noreply, s}
    end
  end

  # The server's exit reason once the OS process is over (see "Lifetime of
  # the server" in Lacca.start/3): what :transient and :permanent act on.
  defp exit_reason(%{quiet: true}), do: :normal
  defp exit_reason(%{status: {:exit, 0}}), do: :normal
  defp exit_reason(%{status: {:exit, code}}), do: {:exit_status, code}
  defp exit_reason(%{status: {:signal, name}}), do: {:signal, name}
  defp exit_reason(%{status: :resin_down}), do: :resin_down

  defp drained?(%{buf: %{stdout: {_, 0}, stderr: {_, 0}}}), do: true
  defp drained?(_s), do: false

  # -- calls -------------------------------------------------------------------

  @impl true
  def handle_call({:read, stream, timeout}, from, %{mode: :buffer} = s) do
    case s.buf[stream] do
      # The end of the output, read after the exit: handed over.
      {_, 0} when s.status != nil ->
        if drained?(s),
          do: {:stop, exit_reason(s), {:ok, ""}, s},
          else: {:reply, {:ok, ""}, s}

      {_, 0} ->
        ref = make_ref()
        s = park_timer(s, ref, timeout, {:read, stream})
        {:noreply, %{s | readers: Map.update!(s.readers, stream, &(&1 ++ [{ref, from}]))}}

      {data, size} ->
        s = %{s | buf: Map.put(s.buf, stream, {[], 0})}
        {:reply, {:ok, IO.iodata_to_binary(data)}, consumed(s, stream, size)}
    end
  end

  def handle_call({:read, _stream, _timeout}, _from, s), do: {:reply, {:error, :not_buffer}, s}

  def handle_call({:write, data}, from, s), do: handle_call({:write, data, :infinity}, from, s)

  def handle_call({:write, data, timeout}, from, s) do
    cond do
      s.stdin != :open ->
        {:reply, {:error, :closed}, s}

      s.status != nil ->
        {:reply, {:error, failure(s)}, s}

      true ->
        ref = make_ref()
        chunks = chunk(data)
        q = Enum.reduce(chunks, s.stdin_q, &:queue.in({:frame, ref, &1}, &2))
        write = %{from: from, remaining: length(chunks), error: nil}

        s =
          park_timer(
            %{s | stdin_q: q, writes: Map.put(s.writes, ref, write)},
            ref,
            timeout,
            :write
          )

        {:noreply, pump(s)}
    end
  end

  def handle_call(:close_stdin, from, s) do
    cond do
      s.status != nil ->
        {:reply, {:error, failure(s)}, s}

      s.stdin != :open ->
        {:reply, :ok, s}

      true ->
        {:noreply, pump(%{s | stdin: :closing, stdin_q: :queue.in({:close, from}, s.stdin_q)})}
    end
  end

  def handle_call({:signal, signo, group}, from, s) do
    if s.status != nil do
      {:reply, {:error, failure(s)}, s}
    else
      {:noreply, signal_ref(s, signo, group, {:signal, from})}
    end
  end

  def handle_call({:resize, rows, cols}, from, s) do
    if s.status != nil do
      {:reply, {:error, failure(s)}, s}
    else
      ref = make_ref()
      Channel.resize(s.chan, ref, rows, cols)
      {:noreply, %{s | calls: Map.put(s.calls, ref, {:resize, from})}}
    end
  end

  def handle_call(:kill, from, s) do
    if s.status != nil do
      {:reply, :ok, s}
    else
      {:noreply, s |> unthrottle() |> signal_ref(Channel.sigkill(), true, {:kill, from})}
    end
  end

  def handle_call({:stop, kill_timeout}, from, s) do
    cond do
      s.status != nil ->
        {:stop, :normal, :ok, s}

      s.stoppers != [] ->
        {:noreply, %{s | stoppers: [from | s.stoppers]}}

      true ->
        s = s |> stopping() |> signal_ref(s.stop_signal, true, :ignore)
        ref = make_ref()
        timer = Process.send_after(self(), {:kill_timeout, ref}, kill_timeout || s.kill_timeout)
        {:noreply, %{s | stoppers: [from], kill_timer: {ref, timer}}}
    end
  end

  def handle_call({:await, timeout}, from, s) do
    case s.status do
      nil ->
        ref = make_ref()
        s = park_timer(s, ref, timeout, :await)
        {:noreply, %{s | awaiters: [{ref, from} | s.awaiters]}}

      :resin_down ->
        {:reply, {:error, :resin_down}, s}

      status ->
        {:reply, {:ok, status}, s}
    end
  end

  def handle_call(:status, _from, s), do: {:reply, s.status, s}
  def handle_call(:os_pid, _from, s), do: {:reply, s.os_pid, s}
  def handle_call(:alive?, _from, s), do: {:reply, s.status == nil, s}

  def handle_call({:set_active, active}, _from, %{mode: :messages} = s) do
    case set_active(s, active) do
      {:noreply, s} -> {:reply, :ok, s}
      {:stop, reason, s} -> {:stop, reason, :ok, s}
    end
  end

  def handle_call({:set_active, _}, _from, s), do: {:reply, {:error, :not_messages}, s}

  @impl true
  # stream!/3 asks for more without waiting for an answer.
  def handle_cast({:set_active, active}, %{mode: :messages} = s), do: set_active(s, active)
  def handle_cast(_request, s), do: {:noreply, s}

  defp set_active(s, active) do
    s = if active in [true, :flow], do: s, else: leave_direct(s)

    active =
      case {s.active, active} do
        {n, m} when is_integer(n) and is_integer(m) -> n + m
        {false, m} when is_integer(m) -> m
        {_, m} -> m
      end

    s =
      if is_integer(active) and active <= 0 do
        send(s.owner, {:lacca, self(), :passive})
        %{s | active: false}
      else
        %{s | active: active}
      end

    s = if s.active == :flow, do: s, else: release(s)
    deliver(s)
  end

  # -- termination -----------------------------------------------------------

  @impl true
  def terminate(_reason, %{phase: :running, status: nil} = s) do
    # Our owner or supervisor is gone: stop the OS process before we go,
    # dropping its output meanwhile (in bounded memory, see Channel.halt/3).
    s = s |> leave_direct() |> release()

    _ =
      if s.chan.credit == :unlimited do
        Channel.kill(s.chan)
      else
        Channel.halt(s.chan, s.stop_signal, s.kill_timeout)
      end

    :ok
  end

  def terminate(_reason, _s), do: :ok

  # A process that exits non-zero ends this server with {:exit_status, n},
  # which OTP reports as an error: keep the report to what identifies the
  # process, not the whole state (its buffers may hold megabytes).
  @impl true
  def format_status(:terminate, [_pdict, s]), do: brief(s)
  def format_status(_normal, [_pdict, s]), do: [data: [{~c"State", brief(s)}]]

  defp brief(%__MODULE__{} = s),
    do: %{cmd: Keyword.get(s.log_meta, :cmd), os_pid: s.os_pid, status: s.status}

  defp brief(state), do: state

  defp owner_exit_reason(reason) when reason in [:normal, :shutdown], do: reason
  defp owner_exit_reason({:shutdown, _} = reason), do: reason
  defp owner_exit_reason(reason), do: {:shutdown, {:owner_exit, reason}}

  # -- output ----------------------------------------------------------------

  # log_output: whole lines (or pieces of @log_line_max bytes) to the Logger.
  defp output(stream, data, %{log: log} = s) when is_map_key(log, stream) do
    {lines, lines_state} = Lines.feed(log[stream], data)
    Enum.each(lines, &log_line(s, stream, &1))
    consumed(%{s | log: %{log | stream => lines_state}}, stream, byte_size(data))
  end

  # Stopping a :buffer process: nobody will read the rest of the output (the
  # server ends with the process): it is dropped, and so consumed. An owner
  # still gets its messages.
  defp output(stream, data, %{mode: :buffer, stoppers: [_ | _]} = s),
    do: consumed(s, stream, byte_size(data))

  # A buffer nobody is bound to read (a supervised child's): the child must
  # never block on it. Its output is consumed as it comes, and only the
  # latest max_buffer to 2 x max_buffer bytes are kept, for a reader that
  # asks by pid or name.
  defp output(stream, data, %{mode: :buffer, readable: false, readers: readers} = s)
       when :erlang.map_get(stream, readers) == [] do
    {acc, size} = s.buf[stream]
    size = size + byte_size(data)
    keep = 4 * s.chan.threshold

    tail =
      if size > 2 * keep do
        bin = IO.iodata_to_binary([acc | data])
        {:binary.copy(binary_part(bin, size - keep, keep)), keep}
      else
        {[acc | data], size}
      end

    consumed(%{s | buf: Map.put(s.buf, stream, tail)}, stream, byte_size(data))
  end

  defp output(stream, data, %{mode: :buffer} = s) do
    case s.readers[stream] do
      [{ref, from} | rest] ->
        reply_parked(s, ref, from, {:ok, data})
        s = %{s | readers: Map.put(s.readers, stream, rest), timers: Map.delete(s.timers, ref)}
        consumed(s, stream, byte_size(data))

      [] ->
        {acc, size} = s.buf[stream]
        %{s | buf: Map.put(s.buf, stream, {[acc | data], size + byte_size(data)})}
    end
  end

  # :messages, active: true or :flow and nothing held back: straight to the
  # owner.
  defp output(stream, data, %{active: active, exit_pending: false} = s)
       when active in [true, :flow] do
    if :queue.is_empty(s.pending) do
      send(s.owner, {:lacca, self(), {stream, data}})
      delivered(s, stream, byte_size(data))
    else
      output_queued(stream, data, s)
    end
  end

  defp output(stream, data, s), do: output_queued(stream, data, s)

  defp output_queued(stream, data, s) do
    {:noreply, s} = deliver(%{s | pending: :queue.in({stream, data}, s.pending)})
    s
  end

  # :messages mode: hand pending chunks to the owner while active allows,
  # then the exit message once everything before it was delivered.
  defp deliver(%{active: false} = s), do: maybe_end(s)

  defp deliver(s) do
    case :queue.out(s.pending) do
      {:empty, _} ->
        maybe_end(s)

      {{:value, {stream, data} = chunk}, pending} ->
        send(s.owner, {:lacca, self(), chunk})
        s = delivered(%{s | pending: pending}, stream, byte_size(data))

        case s.active do
          active when active in [true, :flow] ->
            deliver(s)

          :once ->
            deliver(%{s | active: false})

          1 ->
            send(s.owner, {:lacca, self(), :passive})
            deliver(%{s | active: false})

          n ->
            deliver(%{s | active: n - 1})
        end
    end
  end

  defp maybe_end(%{exit_pending: true} = s) do
    if :queue.is_empty(s.pending) do
      notify_end(s)
      {:stop, exit_reason(s), s}
    else
      {:noreply, s}
    end
  end

  defp maybe_end(s), do: {:noreply, s}

  # Direct: the daemon sent it, after the last data.
  defp notify_end(%{direct: true}), do: :ok

  defp notify_end(%{status: :resin_down} = s),
    do: send(s.owner, {:lacca, self(), {:error, :resin_down}})

  defp notify_end(s), do: send(s.owner, {:lacca, self(), {:exit, s.status}})

  # Bytes handed to the reader: give resin that much credit back, in batches
  # (none once the process is over or was unthrottled).
  defp consumed(s, stream, size), do: %{s | chan: Channel.consumed(s.chan, stream, size)}

  # :messages mode: `size` bytes of `stream` went to the owner. With active:
  # :flow a grant they make due waits while the owner is behind.
  defp delivered(s, _stream, 0), do: s

  defp delivered(%{active: :flow, flow: nil} = s, stream, size) do
    s = if Channel.grant_due?(s.chan, stream, size), do: hold_if_behind(s), else: s
    consumed(s, stream, size)
  end

  defp delivered(s, stream, size), do: consumed(s, stream, size)

  # A grant comes due: held while a local owner is behind (flow_timer/2),
  # and while a remote one is asked (ask_owner/2).
  defp hold_if_behind(s) do
    cond do
      node(s.owner) != node() -> ask_owner(%{s | chan: Channel.hold(s.chan)}, @flow_check_first)
      backlogged?(s.owner) -> flow_timer(%{s | chan: Channel.hold(s.chan)}, @flow_check_first)
      true -> s
    end
  end

  # Whether a local owner is behind: more than @flow_backlog messages
  # queued. (A remote one is asked: ask_owner/2; direct output, the one
  # caller left that does not check first, has local owners only.)
  defp backlogged?(owner) when node(owner) != node(), do: false

  defp backlogged?(owner) do
    case Process.info(owner, :message_queue_len) do
      {:message_queue_len, n} -> n > @flow_backlog
      nil -> false
    end
  end

  # A remote owner's queue cannot be read from here: its node is asked
  # (process_info there, an :erpc request, never a blocking call), and
  # the grant stays held until the answer (answered/2) releases it or, the
  # owner still behind, starts a flow timer of `delay` ms, whose look is a
  # request again. At most one request is in flight: one still unanswered
  # (from before a release) serves. Its answer costs a round trip per
  # grant, while resin goes on with the credit it has (at most 3/4 of
  # :max_buffer). The request travels behind the chunks sent before it (one
  # connection, one sender): the answer counts them; what resin sends while
  # it is on its way (at most the credit it had) comes on top.
  defp ask_owner(%{flow_ask: nil, owner: owner} = s, delay) do
    req = :erpc.send_request(node(owner), :erlang, :process_info, [owner, :message_queue_len])
    %{s | flow: {:ask, delay}, flow_ask: {:erpc, req}}
  end

  defp ask_owner(s, delay), do: %{s | flow: {:ask, delay}}

  # true | false for an answer (no answer: the node or the owner is gone,
  # which the owner's monitor reports: not behind), :no_response for a
  # message that is not one.
  defp owner_answer(msg, req) do
    case :erpc.check_response(msg, req) do
      {:response, {:message_queue_len, n}} -> n > @flow_backlog
      {:response, _undefined} -> false
      :no_response -> :no_response
    end
  catch
    _kind, _reason -> false
  end

  defp answered(%{flow: {:ask, delay}} = s, true), do: flow_timer(s, delay)
  defp answered(%{flow: {:ask, _}} = s, false), do: release(s)
  # Released meanwhile (set_active/2): nothing held.
  defp answered(s, _backlogged), do: s

  defp flow_timer(s, delay) do
    ref = make_ref()
    Process.send_after(self(), {:flow_check, ref}, delay)
    %{s | flow: {ref, delay}}
  end

  # Withheld credit goes out (a pending timer message is then ignored), a
  # paused direct reader resumes (the paused port's data, queued before the
  # message that got us here, was handled).
  defp release(%{flow: nil} = s), do: s

  defp release(s) do
    s = take_paused(s)
    %{s | flow: nil, chan: s.chan |> Channel.release() |> Channel.resume()}
  end

  defp take_paused(s) do
    for data <- Channel.take_paused(s.chan), do: send(s.owner, {:lacca, self(), {:stdout, data}})
    s
  end

  # Direct output with active: :flow: the reader pauses while the owner is
  # behind (a flow timer looks again, release/1 resumes it).
  defp direct_flow(%{active: :flow, flow: nil} = s) do
    if backlogged?(s.owner),
      do: flow_timer(%{s | chan: Channel.pause(s.chan)}, @flow_check_first),
      else: s
  end

  defp direct_flow(%{active: :flow} = s), do: %{s | chan: Channel.pause(s.chan)}
  defp direct_flow(s), do: s

  # The direct reader ends (the exit, resin gone): its last data in order.
  defp direct_end(s) do
    {chunks, chan} = Channel.direct_end(s.chan)
    Enum.reduce(chunks, %{s | chan: chan}, &output(:stdout, &1, &2))
  end

  # Delivery back from the daemon to us, for good: the bytes the owner got
  # since the last note are consumed. :gone: the process is over, its exit
  # (already sent to the owner by the daemon) is in our mailbox.
  defp leave_direct(%{direct: true, chan: %Channel{credit: credit}} = s) when credit != :closed do
    case Daemon.undirect(s.daemon, s.chan.id) do
      {:ok, out, err} -> %{s | direct: false} |> consumed(:stdout, out) |> consumed(:stderr, err)
      :gone -> s
    end
  end

  # Direct output: the reader ends, its last data is queued (delivered as
  # active allows), and resin reads the pipe from now on. (Those chunks are
  # granted as credit when delivered although resin never charged them: a
  # one-time extra of at most the chunks in our mailbox.)
  defp leave_direct(%{chan: %Channel{dfile: file}} = s) when file != nil do
    {chunks, chan} = Channel.relay(s.chan)
    pending = Enum.reduce(chunks, s.pending, &:queue.in({:stdout, &1}, &2))
    %{s | chan: chan, pending: pending}
  end

  defp leave_direct(s), do: s

  # SIGKILL goes out: unlimited credit first (see Channel.unthrottle/1).
  defp unthrottle(s), do: %{take_paused(s) | chan: Channel.unthrottle(s.chan)}

  # The stop signal goes out: a bounded extra grant (Channel.stop_credit/1).
  defp stopping(s), do: %{s | chan: Channel.stop_credit(s.chan)}

  defp flush_log(s) do
    log =
      Map.new(s.log, fn {stream, lines} ->
        Enum.each(Lines.flush(lines), &log_line(s, stream, &1))
        {stream, Lines.new(@log_line_max)}
      end)

    %{s | log: log}
  end

  defp log_line(s, stream, line) do
    line =
      case :binary.last(line) do
        ?\n -> binary_part(line, 0, byte_size(line) - 1)
        _ -> line
      end

    Logger.bare_log(s.log_level, [s.log_prefix | line], [{:lacca_stream, stream} | s.log_meta])
  end

  # -- stdin -------------------------------------------------------------------

  # An empty write is one empty frame (answered by its ack).
  defp chunk(data) do
    case Channel.chunks(data) do
      [] -> [""]
      chunks -> chunks
    end
  end

  # Send queued STDIN frames while the ack window has room; a
  # close request goes out right after the frames queued before it.
  defp pump(s) do
    case :queue.peek(s.stdin_q) do
      {:value, {:frame, ref, data}} when Channel.is_stdin_room(s.inflight_n) ->
        Channel.write_stdin(s.chan, data)

        pump(%{
          s
          | stdin_q: :queue.drop(s.stdin_q),
            inflight: :queue.in(ref, s.inflight),
            inflight_n: s.inflight_n + 1
        })

      {:value, {:close, from}} ->
        ref = make_ref()
        Channel.close_stdin(s.chan, ref)
        s = %{s | stdin_q: :queue.drop(s.stdin_q), calls: Map.put(s.calls, ref, {:close, from})}
        pump(s)

      _ ->
        s
    end
  end

  defp acked(s, status) do
    case :queue.out(s.inflight) do
      {{:value, ref}, inflight} ->
        s = %{s | inflight: inflight, inflight_n: s.inflight_n - 1}

        case s.writes do
          %{^ref => w} ->
            error = w.error || ack_error(status)

            if w.remaining == 1 do
              reply_parked(s, ref, w.from, if(error, do: {:error, error}, else: :ok))
              %{s | writes: Map.delete(s.writes, ref), timers: Map.delete(s.timers, ref)}
            else
              %{
                s
                | writes: Map.put(s.writes, ref, %{w | remaining: w.remaining - 1, error: error})
              }
            end

          _ ->
            s
        end

      {:empty, _} ->
        s
    end
  end

  defp ack_error(:written), do: nil
  defp ack_error(:no_process), do: :exited
  defp ack_error(other), do: other

  # -- control -----------------------------------------------------------------

  defp signal_ref(s, signo, group, what) do
    ref = make_ref()
    Channel.signal(s.chan, ref, signo, group)
    %{s | calls: Map.put(s.calls, ref, what)}
  end

  defp signal_result(:ok), do: :ok
  defp signal_result({:error, :einval}), do: {:error, :unknown_signal}
  defp signal_result({:error, :no_process}), do: {:error, :exited}
  # resin reaped the process; its exit is on its way.
  defp signal_result({:error, :esrch}), do: {:error, :exited}
  defp signal_result({:error, reason}), do: {:error, reason}

  defp resize_result(:ok), do: :ok
  defp resize_result({:error, :enotty}), do: {:error, :not_a_pty}
  defp resize_result({:error, reason}) when reason in [:no_process, :esrch], do: {:error, :exited}
  defp resize_result({:error, reason}), do: {:error, reason}

  defp close_result(:ok), do: :ok
  defp close_result({:error, :no_process}), do: {:error, :exited}
  defp close_result({:error, reason}), do: {:error, reason}

  defp failure(%{status: :resin_down}), do: :resin_down
  defp failure(_), do: :exited

  # -- parked calls with a time limit ------------------------------------------

  defp park_timer(s, _ref, :infinity, _what), do: s

  defp park_timer(s, ref, timeout, what) do
    timer = Process.send_after(self(), {:timeout, ref}, timeout)
    %{s | timers: Map.put(s.timers, ref, {timer, what})}
  end

  defp reply_parked(s, ref, from, reply) do
    _ =
      case s.timers do
        %{^ref => {timer, _}} -> Process.cancel_timer(timer, async: true, info: false)
        _ -> :ok
      end

    GenServer.reply(from, reply)
  end

  defp timed_out(ref, s) do
    case Map.pop(s.timers, ref) do
      {nil, _} ->
        s

      {{_, :await}, timers} ->
        {[{^ref, from}], awaiters} = Enum.split_with(s.awaiters, &(elem(&1, 0) == ref))
        GenServer.reply(from, {:error, :timeout})
        %{s | timers: timers, awaiters: awaiters}

      # write_stdin/3 timed out: the frames not yet sent are dropped; those
      # in flight (resin has them) are still written.
      {{_, :write}, timers} ->
        {w, writes} = Map.pop(s.writes, ref)
        GenServer.reply(w.from, {:error, :timeout})
        q = :queue.filter(fn item -> not match?({:frame, ^ref, _}, item) end, s.stdin_q)
        %{s | timers: timers, writes: writes, stdin_q: q}

      {{_, {:read, stream}}, timers} ->
        {[{^ref, from}], rest} = Enum.split_with(s.readers[stream], &(elem(&1, 0) == ref))
        GenServer.reply(from, {:ok, ""})
        %{s | timers: timers, readers: Map.put(s.readers, stream, rest)}
    end
  end

  defp cancel_kill_timer(%{kill_timer: {_, timer}}) do
    _ = Process.cancel_timer(timer, async: true, info: false)
    :ok
  end

  defp cancel_kill_timer(_), do: :ok
end
