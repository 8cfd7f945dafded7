defmodule Lacca.Daemon do
  @moduledoc false
  # Owns one resin port (v1). Opened on the first spawn, handshake included,
  # or, for the shared daemons, right after the application started
  # (prestart/1, config :lacca, :prestart). Routes every frame about process
  # `id` to the process that registered `id` (its "receiver"):
  #
  #   * raw frames (STDOUT, STDERR, STDIN_ACK) as {:"$lacca", port, payload},
  #     the payload untouched (the receiver matches it with a binary pattern);
  #     STDIN_ACK goes to the id's "acker" instead, the process that writes
  #     its stdin (the receiver itself, except for stream!/3's input writer);
  #   * events as {:"$lacca_event", port, term}.
  #
  # After an `exit` or `spawn_error` event the id is unregistered, so a
  # receiver never gets a frame about its id after the exit event.
  #
  # There are a few shared daemons (pick/0 chooses one, round robin), each
  # restarted by the supervisor when its resin dies.
  #
  # Direct delivery (spawn/8 with an `owner`, a Lacca.Process server in
  # `:messages` mode with `active: true` or `:flow`): output is sent straight
  # to the owner as {:lacca, receiver, {stream, data}}, one hop instead of
  # two; the receiver gets a Channel.sent/4 note per quarter of :max_buffer
  # (its credit accounting), and the owner gets the final {:exit, status}
  # from the daemon too, after the last data (the order between two messages
  # is guaranteed only when one process sends both), or {:error, :resin_down}
  # when the daemon stops. undirect/2 hands delivery back to the receiver
  # (the frames it gets from then on come after those the owner got).
  #
  # Receivers write STDIN, CREDIT and CONTROL frames themselves through
  # Lacca.Channel (any process may write to the port); only spawn goes through
  # the daemon, which has to register the receiver first. The messages above
  # and the frame bytes are Lacca.Channel's (its macros match them).
  #
  # The daemon monitors every receiver; when one dies, its OS process group is
  # SIGKILLed. When resin dies the daemon stops with {:shutdown, ...}: the
  # receivers see the daemon's :DOWN (their "resin_down" outcome), the
  # supervisor starts a fresh (lazy) daemon, and the process groups resin knew
  # about, and every process carrying resin's cookie, are SIGKILLed from here
  # as a fallback for grandchildren (Lacca.Cleanup).
  #
  # A dedicated daemon (`client: pid`) serves one client and stops when that
  # client dies or calls release/1.
  #
  # Direct output (Lacca.Channel, "direct output"): a spawn with the option
  # {direct, [stdout]} is answered {spawned, Id, OsPid, [{stdout, Fd, Inode}]};
  # the daemon forwards it as {:spawned, id, os_pid, {:direct, resin_os_pid,
  # streams}}, so that the receiver can open /proc/<resin>/fd/<Fd>; with
  # {direct_after, N} the pipes come later, in {direct, Id, Streams}
  # (forwarded as {:direct, id, {:direct, resin_os_pid, streams}}). resin
  # holds such a process's exit back until its pipe is empty: when the
  # receiver dies first, {relay, Id} goes with the SIGKILL (resin reads the
  # pipe itself and reports the exit).

  use GenServer
  require Logger

  alias Lacca.{Channel, Protocol}

  require Channel

  @handshake_timeout 15_000
  # Spawn errors that another shared resin may not give (out of descriptors
  # or processes there): the spawn is tried on the next one.
  @refused [:emfile, :eagain]
  @max_id 4_294_967_295

  # -- the pool of shared daemons --------------------------------------------

  @doc false
  # Names of the shared daemons: Lacca.Daemon, Lacca.Daemon.1, ...
  @spec names(pos_integer()) :: [atom()]
  def names(n), do: [__MODULE__ | for(i <- 1..(n - 1)//1, do: Module.concat(__MODULE__, "#{i}"))]

  @doc false
  # How many shared daemons to run: config :lacca, :shared_daemons.
  @spec pool_size() :: pos_integer()
  def pool_size do
    case Application.get_env(:lacca, :shared_daemons, min(System.schedulers_online(), 4)) do
      n when is_integer(n) and n > 0 ->
        n

      other ->
        raise ArgumentError,
              "config :lacca, :shared_daemons must be a positive integer, got: #{inspect(other)}"
    end
  end

  @doc false
  @spec init_pool(pos_integer()) :: [atom()]
  def init_pool(n) do
    names = names(n)
    :persistent_term.put({__MODULE__, :pool}, {List.to_tuple(names), :atomics.new(1, [])})
    names
  end

  @doc false
  # The shared daemons, round robin: one resin forks one child at a time, so
  # several resins spread spawns (and file descriptors) over more cores.
  @spec pick() :: atom()
  def pick do
    {names, counter} = pool()
    elem(names, rem(:atomics.add_get(counter, 1, 1), tuple_size(names)))
  end

  @doc false
  @spec shared() :: [atom()]
  def shared do
    {names, _} = pool()
    Tuple.to_list(names)
  end

  defp pool do
    case :persistent_term.get({__MODULE__, :pool}, nil) do
      nil ->
        ensure_started!()
        :persistent_term.get({__MODULE__, :pool})

      pool ->
        pool
    end
  end

  @doc false
  # Where nothing started :lacca (a release's `bin/app eval`, a script run
  # with `mix run --no-start`), every entry point's first call starts it.
  # One that was stopped on purpose is not started again behind its back:
  # only one never started (no pool yet).
  @spec ensure_started!() :: :ok
  def ensure_started! do
    if :persistent_term.get({__MODULE__, :pool}, nil) == nil do
      case Application.ensure_all_started(:lacca) do
        {:ok, _} ->
          :ok

        {:error, reason} ->
          raise RuntimeError, "lacca is not started and could not be started: #{inspect(reason)}"
      end
    else
      :ok
    end
  end

  @doc false
  # Whether the shared daemons start their resin when :lacca starts:
  # config :lacca, :prestart (default true).
  @spec prestart?() :: boolean()
  def prestart? do
    case Application.get_env(:lacca, :prestart, true) do
      prestart when is_boolean(prestart) ->
        prestart

      other ->
        raise ArgumentError,
              "config :lacca, :prestart must be true or false, got: #{inspect(other)}"
    end
  end

  # -- API ---------------------------------------------------------------

  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts) do
    {gen_opts, opts} = Keyword.split(opts, [:name])
    GenServer.start_link(__MODULE__, opts, gen_opts)
  end

  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) do
    %{
      id: Keyword.get(opts, :name, __MODULE__),
      start: {__MODULE__, :start_link, [opts]},
      restart: Keyword.get(opts, :restart, :permanent),
      shutdown: 5_000
    }
  end

  @doc false
  # Registers `receiver` (and `acker`, which gets the STDIN_ACK frames) for a
  # fresh id and sends the spawn request with `max_buffer` bytes of initial
  # credit per stream. Returns {:ok, daemon_pid, port, id} or {:error, reason},
  # once resin answered the spawn: its `spawned` or `spawn_error` event is
  # then in the receiver's mailbox (sent before the reply, by the daemon, so
  # in order with the frames that follow).
  #
  # A shared daemon whose resin refused the spawn for lack of resources
  # (:emfile, :eagain: out of descriptors or processes) does not forward the
  # error: the spawn is tried on the next shared daemon, once on each, and
  # only the last one's answer reaches the receiver.
  #
  # `owner`: output goes straight to it (direct delivery, see the top).
  @spec spawn(
          GenServer.server(),
          binary(),
          [binary()],
          list(),
          pos_integer() | :infinity,
          pid(),
          pid() | nil,
          pid() | nil
        ) ::
          {:ok, pid(), port(), Lacca.Protocol.id()} | {:error, term()}
  def spawn(daemon, exec, args, spawn_opts, max_buffer, receiver, acker \\ nil, owner \\ nil) do
    request = {:spawn, exec, args, spawn_opts, max_buffer, receiver, acker || receiver, owner}
    spawn_on(daemon, request, if(is_atom(daemon), do: :not_yet, else: []))
  end

  # The shared daemons after `daemon`, in round robin order.
  defp other_shared(daemon) do
    {before, [^daemon | rest]} = Enum.split_while(shared(), &(&1 != daemon))
    rest ++ before
  rescue
    MatchError -> []
  end

  # `others`: the shared daemons still to try after a refusal, or
  # :not_yet (listed on the first refusal only, not on every spawn).
  defp spawn_on(daemon, request, others) do
    case call_spawn(daemon, {:spawn_wait, request, others == :not_yet or others != []}) do
      {:refused, reason} ->
        case if(others == :not_yet, do: other_shared(daemon), else: others) do
          [] -> {:error, reason}
          [next | rest] -> spawn_on(next, request, rest)
        end

      other ->
        other
    end
  end

  defp call_spawn(daemon, request) do
    result =
      case safe_call(daemon, request) do
        {:error, :noproc} when is_atom(daemon) ->
          # The shared daemon is being restarted (resin just died): the
          # supervisor has the exit signal queued before our call, so once it
          # answered, the new daemon is registered.
          sync_supervisor!()
          safe_call(daemon, request)

        other ->
          other
      end

    case result do
      {:error, :noproc} -> {:error, :resin_down}
      other -> other
    end
  end

  @typedoc "A spawn sent with spawn_async/6, awaited with await_spawn/1."
  @type pending :: {GenServer.server(), reference(), tuple(), [atom()] | :not_yet}

  @doc false
  # spawn/8 for a receiver that does not wait at once (a Lacca.Process
  # server, from its init/1): the request leaves now, the receiver (the
  # caller) collects the answer later with await_spawn/1. The daemon answers
  # with {:"$lacca_spawning", ref, {:ok, daemon_pid, port, id} | {:error,
  # reason}} as soon as the request went to resin, before any event about
  # the id; the daemon is monitored meanwhile (by name for a shared one).
  @spec spawn_async(
          GenServer.server(),
          binary(),
          [binary()],
          list(),
          pos_integer() | :infinity,
          pid() | nil
        ) :: pending()
  def spawn_async(daemon, exec, args, spawn_opts, max_buffer, owner) do
    request = {:spawn, exec, args, spawn_opts, max_buffer, self(), self(), owner}
    send_spawn(daemon, request, if(is_atom(daemon), do: :not_yet, else: []))
  end

  defp send_spawn(daemon, request, others) do
    # One lookup of a shared daemon's name for both the monitor and the
    # request: a daemon restarted between two lookups would get the request
    # while the monitor watched its predecessor (a start failing as
    # :resin_down). Not registered: the monitor says :noproc at once.
    target = (is_atom(daemon) && Process.whereis(daemon)) || daemon
    mref = Process.monitor(target)
    GenServer.cast(target, {:spawn_async, self(), mref, request})
    {daemon, mref, request, others}
  end

  @doc false
  # Waits for resin's answer to spawn_async/6: {:ok, daemon_pid, port, id,
  # os_pid} once the OS process runs (its `spawned` event consumed here), or
  # {:error, reason} as from spawn/8, with the same retries: a shared
  # daemon being restarted is waited for once, a resource refusal (:emfile,
  # :eagain) is tried on each other shared daemon in turn.
  # The 6th element: the direct part of the spawned event (nil without).
  @spec await_spawn(pending(), boolean()) ::
          {:ok, pid(), port(), Lacca.Protocol.id(), pos_integer(), term()} | {:error, term()}
  def await_spawn({daemon, mref, request, others}, restarted? \\ false) do
    receive do
      {:"$lacca_spawning", ^mref, {:ok, dpid, port, id}} ->
        await_event(daemon, mref, request, others, dpid, port, id)

      {:"$lacca_spawning", ^mref, {:error, reason}} ->
        Process.demonitor(mref, [:flush])
        {:error, reason}

      # The shared daemon is being restarted (resin just died): see
      # call_spawn/2.
      {:DOWN, ^mref, :process, _, :noproc} when is_atom(daemon) and not restarted? ->
        sync_supervisor!()
        await_spawn(send_spawn(daemon, request, others), true)

      {:DOWN, ^mref, :process, _, _} ->
        {:error, :resin_down}
    end
  end

  defp await_event(daemon, mref, request, others, dpid, port, id) do
    receive do
      Channel.event(^port, {:spawned, ^id, os_pid}) ->
        Process.demonitor(mref, [:flush])
        {:ok, dpid, port, id, os_pid, nil}

      Channel.event(^port, {:spawned, ^id, os_pid, direct}) ->
        Process.demonitor(mref, [:flush])
        {:ok, dpid, port, id, os_pid, direct}

      Channel.event(^port, {:spawn_error, ^id, reason}) ->
        Process.demonitor(mref, [:flush])
        retry(daemon, request, others, reason)

      {:DOWN, ^mref, :process, _, _} ->
        {:error, :resin_down}
    end
  end

  defp retry(daemon, request, others, reason) when reason in @refused do
    case if(others == :not_yet, do: other_shared(daemon), else: others) do
      [next | rest] -> await_spawn(send_spawn(next, request, rest))
      [] -> {:error, reason}
    end
  end

  defp retry(_daemon, _request, _others, reason), do: {:error, reason}

  defp sync_supervisor! do
    _ = Supervisor.which_children(Lacca.Supervisor)
    :ok
  catch
    :exit, _ ->
      raise "the :lacca application is not started: add :lacca to your project's " <>
              "dependencies or call Application.ensure_all_started(:lacca)"
  end

  defp safe_call(daemon, request) do
    GenServer.call(daemon, request, :infinity)
  catch
    :exit, {:noproc, _} -> {:error, :noproc}
    :exit, {{:shutdown, _}, _} -> {:error, :resin_down}
    :exit, {:normal, _} -> {:error, :resin_down}
  end

  @doc false
  # Ends direct delivery for `id`: the receiver gets its frames from now on.
  # {:ok, out, err}: the bytes the owner got that no Channel.sent/4 note
  # reported yet; :gone when the process is over (its exit, already sent to
  # the owner, is in the receiver's mailbox) or the daemon is gone.
  @spec undirect(pid(), Lacca.Protocol.id()) ::
          {:ok, non_neg_integer(), non_neg_integer()} | :gone
  def undirect(daemon, id) do
    GenServer.call(daemon, {:undirect, id}, :infinity)
  catch
    :exit, _ -> :gone
  end

  @doc false
  # Starts a dedicated daemon for `client` under Lacca.DaemonSupervisor.
  @spec start_dedicated(pid()) :: DynamicSupervisor.on_start_child()
  def start_dedicated(client) do
    ensure_started!()

    DynamicSupervisor.start_child(
      Lacca.DaemonSupervisor,
      {__MODULE__, client: client, restart: :temporary}
    )
  end

  @doc false
  # Starts resin now rather than on the first spawn, in the daemon's own
  # process (loading lacca's modules meanwhile): the cast returns at once.
  # Spawn requests that arrive meanwhile wait in the daemon's mailbox and are
  # served once resin is up. A failed start is not an error here: the daemon
  # stays lazy, and the next spawn tries again and returns the reason
  # ({:resin_not_found, message}, ...). Only the application's start sends
  # this, not a restart: a resin that dies at once costs one restart, not a
  # loop.
  @spec prestart(GenServer.server()) :: :ok
  def prestart(daemon), do: GenServer.cast(daemon, :prestart)

  @doc false
  @spec release(GenServer.server()) :: :ok
  def release(daemon), do: GenServer.cast(daemon, :release)

  @doc false
  # The OS pid of resin, or nil when no resin runs (yet). Answered after a
  # prestart/1 in progress, so it also waits until a prestarted resin is up.
  @spec resin_os_pid(GenServer.server()) :: pos_integer() | nil
  def resin_os_pid(daemon \\ __MODULE__), do: GenServer.call(daemon, :resin_os_pid)

  @doc false
  # The OS processes the daemon routes frames for, as
  # {id, receiver, acker, os_pid}: the receiver and acker are nil once the
  # receiver died (its group was killed, the exit is awaited), the os_pid
  # nil until resin reported the spawn. An id is here until resin reported
  # the exit or the spawn failure.
  @spec processes(GenServer.server()) ::
          [{Lacca.Protocol.id(), pid() | nil, pid() | nil, pos_integer() | nil}]
  def processes(daemon), do: GenServer.call(daemon, :processes)

  # -- server ------------------------------------------------------------

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)

    client =
      case opts[:client] do
        nil -> nil
        pid -> {pid, Process.monitor(pid)}
      end

    {:ok,
     %{
       port: nil,
       next_id: 0,
       # id => {receiver | nil, acker | nil, monitor_ref | nil, os_pid | nil}
       procs: %{},
       # monitor_ref => id
       mrefs: %{},
       client: client,
       # RESIN_TREE prefix of this resin's descendants (Lacca.Cleanup)
       cookie: nil,
       # resin's OS pid (direct output: /proc/<pid>/fd/<fd>)
       resin_pid: nil,
       # id => {from, reply, retry?}: spawn_wait calls awaiting resin's answer
       waiting: %{},
       # Whether this resin reads the BEAM's working directory itself
       # ({cd_of, pid}); id => {exec, args, opts} of such a spawn until its
       # answer (see cd_of_answer/2)
       cd_of: true,
       cd_of_sent: %{},
       # id => {owner, receiver, note_every, out, err}: direct delivery
       direct: %{}
     }}
  end

  @impl true
  # A spawn answered once resin answered it (see spawn/7).
  def handle_call({:spawn_wait, request, retry?}, from, state) do
    case handle_call(request, from, state) do
      {:reply, {:ok, _, _, id} = ok, state} ->
        {:noreply, %{state | waiting: Map.put(state.waiting, id, {from, ok, retry?})}}

      other ->
        other
    end
  end

  def handle_call({:spawn, exec, args, opts, max_buffer, receiver, acker, owner}, _from, state) do
    case ensure_port(state) do
      {:ok, state} ->
        {id, state} = next_id(state)
        credit = if max_buffer == :infinity, do: [], else: [{:credit, max_buffer}]
        {opts, state} = cd_of_request(id, exec, args, opts ++ credit, state)
        # A request above one packet goes in parts (docs/protocol.md 4.3.1),
        # so execve decides what is too big (E2BIG); only a variable name
        # longer than a packet cannot be sent at all (E2BIG here).
        frames = Protocol.spawn_frames(id, exec, args, opts)

        cond do
          frames == {:error, :e2big} ->
            {:reply, frames, state}

          Enum.all?(elem(frames, 1), &Channel.command(state.port, &1)) ->
            mref = Process.monitor(receiver)

            state = %{
              state
              | procs: Map.put(state.procs, id, {receiver, acker, mref, nil}),
                mrefs: Map.put(state.mrefs, mref, id),
                direct: direct(state.direct, id, owner, receiver, max_buffer)
            }

            {:reply, {:ok, self(), state.port, id}, state}

          true ->
            # resin just died; its exit_status message is on its way.
            {:reply, {:error, :resin_down}, state}
        end

      {:error, reason, state} ->
        {:reply, {:error, reason}, state}
    end
  end

  def handle_call({:undirect, id}, _from, state) do
    case Map.pop(state.direct, id) do
      {{_, _, _, out, err}, direct} -> {:reply, {:ok, out, err}, %{state | direct: direct}}
      {nil, _} -> {:reply, :gone, state}
    end
  end

  def handle_call(:processes, _from, state) do
    procs =
      for {id, {receiver, acker, _mref, os_pid}} <- state.procs, do: {id, receiver, acker, os_pid}

    {:reply, Enum.sort(procs), state}
  end

  def handle_call(:resin_os_pid, _from, %{port: nil} = state), do: {:reply, nil, state}

  def handle_call(:resin_os_pid, _from, state) do
    {:os_pid, os_pid} = Port.info(state.port, :os_pid)
    {:reply, os_pid, state}
  end

  @impl true
  # spawn_async/6: answered at once, before any event about the id.
  def handle_cast({:spawn_async, receiver, ref, request}, state) do
    {:reply, reply, state} = handle_call(request, nil, state)
    send(receiver, {:"$lacca_spawning", ref, reply})
    {:noreply, state}
  end

  def handle_cast(:prestart, state) do
    case ensure_port(state, &preload/0) do
      {:ok, state} ->
        {:noreply, state}

      {:error, reason, state} ->
        Logger.debug("lacca: resin not prestarted: #{inspect(reason)}")
        {:noreply, state}
    end
  end

  def handle_cast(:release, state) do
    close_port(state)
    {:stop, :normal, %{state | port: nil, procs: %{}, direct: %{}}}
  end

  @impl true
  # STDOUT / STDERR: forwarded as they are. This is the hot path.
  def handle_info(
        {port, {:data, Channel.raw_output(type, id) = frame}},
        %{port: port, direct: direct} = state
      )
      when Channel.is_output_type(type) and is_map_key(direct, id) do
    route = deliver(frame, port, id, :erlang.map_get(id, direct))
    {:noreply, %{state | direct: %{direct | id => route}}}
  end

  def handle_info({port, {:data, Channel.raw_output(type, id) = frame}}, %{port: port} = state)
      when Channel.is_output_type(type) do
    case state.procs do
      %{^id => {receiver, _, _, _}} when receiver != nil ->
        send(receiver, Channel.forward(port, frame))

      _ ->
        :ok
    end

    {:noreply, state}
  end

  # STDIN_ACK: to whoever writes the stdin.
  def handle_info({port, {:data, Channel.raw_stdin_ack(id) = frame}}, %{port: port} = state) do
    case state.procs do
      %{^id => {_, acker, _, _}} when acker != nil -> send(acker, Channel.forward(port, frame))
      _ -> :ok
    end

    {:noreply, state}
  end

  def handle_info({port, {:data, Channel.raw_event(etf)}}, %{port: port} = state) do
    case Protocol.decode_term(etf) do
      {:ok, {:spawned, id, os_pid, streams}} ->
        # Direct output: the receiver needs resin's pid to open the pipe.
        state = %{state | cd_of_sent: Map.delete(state.cd_of_sent, id)}

        {:noreply,
         answer_waiting({:spawned, id, os_pid, {:direct, state.resin_pid, streams}}, state)}

      {:ok, {:direct, id, streams}} ->
        # The handover of a spawn with direct_after (Lacca.Channel).
        case state.procs do
          %{^id => {receiver, _, _, _}} when receiver != nil ->
            forward(receiver, {:direct, id, {:direct, state.resin_pid, streams}}, state)

          _ ->
            # Its receiver died (the relay sent then came too soon):
            # nobody reads the pipe, resin must.
            Channel.command(state.port, Protocol.control({:relay, id}))
        end

        {:noreply, state}

      {:ok, event} ->
        case cd_of_answer(event, state) do
          {:resent, state} -> {:noreply, state}
          {:event, state} -> {:noreply, answer_waiting(event, state)}
        end

      {:error, _} ->
        Logger.warning("lacca: resin sent an undecodable event: #{inspect(etf, limit: 50)}")
        {:noreply, state}
    end
  end

  def handle_info({port, {:data, frame}}, %{port: port} = state) do
    Logger.warning("lacca: unexpected frame from resin: #{inspect(frame, limit: 50)}")
    {:noreply, state}
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = state) do
    kill_groups(state)
    {:stop, {:shutdown, {:resin_down, {:exit_status, status}}}, %{state | port: nil}}
  end

  def handle_info({:EXIT, port, reason}, %{port: port} = state) do
    kill_groups(state)
    {:stop, {:shutdown, {:resin_down, reason}}, %{state | port: nil}}
  end

  def handle_info({:DOWN, mref, :process, _, _}, %{client: {_, mref}} = state) do
    # Our only client died: resin kills everything when its stdin closes.
    close_port(state)
    {:stop, :normal, %{state | port: nil, procs: %{}, direct: %{}}}
  end

  def handle_info({:DOWN, mref, :process, _, _}, state) do
    case Map.pop(state.mrefs, mref) do
      {nil, _} ->
        {:noreply, state}

      {id, mrefs} ->
        # The receiver died: its process group goes with it. Unlimited
        # credit lets resin drain the pipes and report (and free) the exit.
        # A direct reader died with it: resin reads the pipe from now on.
        if state.port != nil do
          Channel.command(state.port, Protocol.control({:relay, id}))
          Channel.kill_group(state.port, id, :receiver_down)
        end

        procs = Map.update!(state.procs, id, fn {_, _, _, os_pid} -> {nil, nil, nil, os_pid} end)
        {:noreply, %{state | mrefs: mrefs, procs: procs, direct: Map.delete(state.direct, id)}}
    end
  end

  # Leftovers of an old port (closed after a failed handshake, ...).
  def handle_info({port, _}, state) when is_port(port), do: {:noreply, state}
  def handle_info({:EXIT, port, _}, state) when is_port(port), do: {:noreply, state}
  def handle_info({:EXIT, _pid, _reason}, state), do: {:noreply, state}
  def handle_info(_msg, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state) do
    # Closing resin's stdin makes resin kill every process group and exit.
    close_port(state)

    # Direct owners of running processes get their final message from here,
    # after their data (their receivers see our :DOWN and leave it to us).
    for {id, {owner, receiver, _, _, _}} <- state.direct,
        match?(%{^id => {_, _, _, os_pid}} when os_pid != nil, state.procs),
        do: send(owner, {:lacca, receiver, {:error, :resin_down}})

    :ok
  end

  # -- direct delivery -------------------------------------------------------

  defp direct(direct, _id, nil, _receiver, _max_buffer), do: direct

  defp direct(direct, id, owner, receiver, max_buffer),
    do: Map.put(direct, id, {owner, receiver, Channel.threshold(max_buffer), 0, 0})

  # One output frame to the owner; the receiver hears of the bytes in notes.
  defp deliver(frame, port, id, {owner, receiver, every, out, err}) do
    {stream, data} = Channel.split_output(frame)
    send(owner, {:lacca, receiver, {stream, data}})

    {out, err} =
      if stream == :stdout, do: {out + byte_size(data), err}, else: {out, err + byte_size(data)}

    if out >= every or err >= every do
      send(receiver, Channel.sent(port, id, out, err))
      {owner, receiver, every, 0, 0}
    else
      {owner, receiver, every, out, err}
    end
  end

  # The exit goes to a direct owner after its last data.
  defp direct_end({tag, id, status}, state) do
    case Map.pop(state.direct, id) do
      {nil, _} ->
        state

      {{owner, receiver, _, _, _}, direct} ->
        if tag == :exit,
          do: send(owner, {:lacca, receiver, {:exit, Channel.exit_status(status)}})

        %{state | direct: direct}
    end
  end

  # -- events --------------------------------------------------------------

  # resin answered a spawn_wait: reply, after the event went to the
  # receiver; or, for a resource refusal that another shared resin may
  # accept, reply {:refused, reason} and drop the event (and the id).
  defp answer_waiting({:spawned, id, _, _} = ev, %{waiting: waiting} = state)
       when is_map_key(waiting, id) do
    {{from, ok, _retry?}, waiting} = Map.pop(waiting, id)
    state = event(ev, %{state | waiting: waiting})
    GenServer.reply(from, ok)
    state
  end

  defp answer_waiting({tag, id, reason} = ev, %{waiting: waiting} = state)
       when tag in [:spawned, :spawn_error] and is_map_key(waiting, id) do
    {{from, ok, retry?}, waiting} = Map.pop(waiting, id)
    state = %{state | waiting: waiting}

    if tag == :spawn_error and retry? and reason in @refused do
      procs = Map.update!(state.procs, id, &put_elem(&1, 0, nil))
      state = event(ev, %{state | procs: procs})
      GenServer.reply(from, {:refused, reason})
      state
    else
      state = event(ev, state)
      GenServer.reply(from, ok)
      state
    end
  end

  defp answer_waiting(event, state), do: event(event, state)

  # {cd_of, pid} (Lacca.Options): resin reads the BEAM's working directory
  # itself. A resin that cannot (an older resin: {badarg, cd_of}; one that
  # may not read /proc/<beam>/cwd: started through a wrapper that changed
  # its user or capabilities, a BEAM that is not dumpable, another pid
  # namespace) answers {cwd, _}: the spawn is sent again at once, under the
  # same id, with the directory the BEAM reads (as before cd_of), and from
  # then on this daemon sends that. When the BEAM cannot read it either (it
  # was removed), resin's answer stands.
  defp cd_of_request(id, exec, args, opts, state) do
    cond do
      not List.keymember?(opts, :cd_of, 0) ->
        {opts, state}

      state.cd_of ->
        {opts, %{state | cd_of_sent: Map.put(state.cd_of_sent, id, {exec, args, opts})}}

      true ->
        case Lacca.Options.beam_cwd() do
          {:ok, cwd} -> {cd_instead(opts, cwd), state}
          # resin's error for its own lookup says the same.
          {:error, _} -> {opts, state}
        end
    end
  end

  defp cd_instead(opts, cwd), do: List.keyreplace(opts, :cd_of, 0, {:cd, cwd})

  defp cd_of_answer(event, %{cd_of_sent: sent} = state) when map_size(sent) > 0 do
    id = elem(event, 1)

    case Map.pop(sent, id) do
      {nil, _} ->
        {:event, state}

      {{exec, args, opts}, sent} ->
        state = %{state | cd_of_sent: sent}

        with {:spawn_error, _, reason} <- event,
             true <- cd_of_refused?(reason),
             {:ok, cwd} <- Lacca.Options.beam_cwd(),
             {:ok, frames} <- Protocol.spawn_frames(id, exec, args, cd_instead(opts, cwd)),
             true <- Enum.all?(frames, &Channel.command(state.port, &1)) do
          Logger.info(
            "lacca: resin cannot read the BEAM's working directory (#{inspect(reason)}): " <>
              "lacca sends it with each spawn"
          )

          {:resent, %{state | cd_of: false}}
        else
          _ -> {:event, state}
        end
    end
  end

  defp cd_of_answer(_event, state), do: {:event, state}

  defp cd_of_refused?({:badarg, :cd_of}), do: true
  defp cd_of_refused?({:cwd, _}), do: true
  defp cd_of_refused?(_), do: false

  defp spawned(id, os_pid, ev, state) do
    case state.procs do
      %{^id => {receiver, acker, mref, _}} ->
        forward(receiver, ev, state)
        %{state | procs: Map.put(state.procs, id, {receiver, acker, mref, os_pid})}

      _ ->
        state
    end
  end

  defp event({:spawned, id, os_pid, _direct} = ev, state), do: spawned(id, os_pid, ev, state)
  defp event({:spawned, id, os_pid} = ev, state), do: spawned(id, os_pid, ev, state)

  defp event({tag, id, _} = ev, state) when tag in [:exit, :spawn_error] do
    state = direct_end(ev, state)

    case Map.pop(state.procs, id) do
      {nil, _} ->
        state

      {{receiver, _, mref, _}, procs} ->
        forward(receiver, spawn_reason(ev), state)
        if mref, do: Process.demonitor(mref, [:flush])
        %{state | procs: procs, mrefs: Map.delete(state.mrefs, mref)}
    end
  end

  defp event({:reply, id, _ref, _result} = ev, state) do
    case state.procs do
      %{^id => {receiver, _, _, _}} -> forward(receiver, ev, state)
      _ -> :ok
    end

    state
  end

  defp event({:error, id, reason} = ev, state) do
    case state.procs do
      %{^id => {receiver, _, _, _}} when receiver != nil ->
        forward(receiver, ev, state)

      _ ->
        Logger.warning("lacca: resin reported an error: #{inspect(reason)}")
    end

    state
  end

  defp event(other, state) do
    Logger.warning("lacca: unexpected event from resin: #{inspect(other)}")
    state
  end

  # A spawn_error's reason as one of t:Lacca.spawn_error/0.
  defp spawn_reason({:spawn_error, id, reason}),
    do: {:spawn_error, id, Lacca.Error.spawn_reason(reason)}

  defp spawn_reason(event), do: event

  defp forward(nil, _event, _state), do: :ok

  defp forward(receiver, event, state),
    do: send(receiver, Channel.forward_event(state.port, event))

  # -- port ----------------------------------------------------------------

  # `meanwhile` runs while resin starts (before its handshake reply is read).
  defp ensure_port(state, meanwhile \\ fn -> :ok end)

  defp ensure_port(%{port: port} = state, _meanwhile) when port != nil, do: {:ok, state}

  defp ensure_port(state, meanwhile) do
    with {:ok, resin} <- Lacca.Resin.find(),
         {:ok, port} <- open(resin),
         :ok <- handshake(port, meanwhile) do
      # nil when resin died right after the handshake (its exit comes next).
      resin_pid =
        case Port.info(port, :os_pid) do
          {:os_pid, os_pid} -> os_pid
          nil -> nil
        end

      cookie = resin_pid && Lacca.Cleanup.cookie_prefix(resin_pid)
      {:ok, %{state | port: port, cookie: cookie, resin_pid: resin_pid}}
    else
      {:error, reason} -> {:error, reason, state}
    end
  end

  defp open(resin) do
    {:ok,
     Port.open({:spawn_executable, resin}, [
       :binary,
       {:packet, 2},
       :exit_status,
       :use_stdio,
       :hide,
       {:env, resin_env()}
     ])}
  rescue
    e in ErlangError ->
      reason = if is_atom(e.original), do: e.original, else: :einval
      {:error, {:resin_failed, {:open, reason}}}
  end

  # config :lacca, :cgroups, false: resin contains by the process tree only.
  defp resin_env do
    if Application.get_env(:lacca, :cgroups, true) == false,
      do: [{~c"RESIN_CGROUPS", ~c"0"}],
      else: []
  end

  defp handshake(port, meanwhile) do
    Channel.command(port, Protocol.hello())
    _ = meanwhile.()

    receive do
      {^port, {:data, <<0x01, 1>>}} ->
        :ok

      {^port, {:data, <<0x01, v>>}} ->
        close_port(%{port: port})
        {:error, {:resin_failed, {:protocol_version, v}}}

      {^port, {:data, other}} ->
        close_port(%{port: port})
        {:error, {:resin_failed, {:bad_handshake, other}}}

      {^port, {:exit_status, status}} ->
        {:error, {:resin_failed, {:exit_status, status}}}

      # A resin that exits before reading the hello can make the write fail
      # (EPIPE): the port then closes without an exit status (1 start in 100
      # under load, measured).
      {:EXIT, ^port, _reason} ->
        {:error, {:resin_failed, :exited}}
    after
      @handshake_timeout ->
        close_port(%{port: port})
        {:error, {:resin_failed, :handshake_timeout}}
    end
  end

  # Where modules are loaded on first use (mix run, iex, tests; not in a
  # release), that costs a first run/3 about 10 ms: a prestart loads lacca's
  # while resin starts.
  defp preload do
    case :application.get_key(:lacca, :modules) do
      {:ok, modules} -> :code.ensure_modules_loaded(modules)
      :undefined -> :ok
    end
  end

  defp close_port(%{port: nil}), do: :ok

  defp close_port(%{port: port}) do
    Port.close(port)
    :ok
  rescue
    ArgumentError -> :ok
  end

  defp next_id(%{next_id: id, procs: procs} = state) do
    following = if id == @max_id, do: 0, else: id + 1

    if Map.has_key?(procs, id) do
      next_id(%{state | next_id: following})
    else
      {id, %{state | next_id: following}}
    end
  end

  # resin is gone: its children died with it (PDEATHSIG), but their own
  # children may not have. Kill every process group we know of, and every
  # process carrying this resin's cookie.
  defp kill_groups(state) do
    groups = for {_, {_, _, _, os_pid}} <- state.procs, is_integer(os_pid), do: os_pid
    Lacca.Cleanup.kill_all(state.cookie, groups)
  end
end
