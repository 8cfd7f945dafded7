defmodule Lacca.Cluster do
  @moduledoc false
  # lacca's place in a cluster of Erlang nodes, one per node, started with
  # the :lacca application:
  #
  #   * it is the member of the :pg group :lacca (scope Lacca.Cluster.Scope)
  #     that says "lacca runs here": Lacca.nodes/0 lists the nodes of the
  #     group's members. :pg keeps the group right when nodes connect,
  #     disconnect or stop :lacca (the member dies with the application);
  #     there is no cluster manager of our own;
  #   * it watches the process servers on other nodes whose owners are on
  #     this node and run in :messages mode (watch/2): when such a server's
  #     node goes away, its owner gets {:lacca, pid, {:error, :noconnection}}
  #     as its final message, as it would get {:error, :resin_down};
  #   * node: :any picks a node round robin (pick/0).

  use GenServer

  @scope Lacca.Cluster.Scope
  @group :lacca

  @doc false
  # The :pg scope and this server, for lacca's supervision tree.
  @spec children() :: [Supervisor.child_spec()]
  def children do
    [
      %{id: @scope, start: {:pg, :start_link, [@scope]}},
      %{id: __MODULE__, start: {GenServer, :start_link, [__MODULE__, [], [name: __MODULE__]]}}
    ]
  end

  @doc false
  @spec scope() :: atom()
  def scope, do: @scope

  @doc false
  @spec group() :: atom()
  def group, do: @group

  @doc false
  # The connected nodes where :lacca runs (this one included), sorted.
  @spec nodes() :: [node()]
  def nodes do
    @scope
    |> :pg.get_members(@group)
    |> Enum.map(&node/1)
    |> Enum.uniq()
    |> Enum.sort()
  rescue
    # The scope is not running: :lacca was stopped here.
    ArgumentError -> []
  end

  @doc false
  # node: :any. Round robin over nodes/0: it costs no round trip on the
  # spawn path (least-running would have to ask every node, or trust counts
  # that are stale by the time the spawn arrives), and the number of OS
  # processes says little about a node's load (a `sleep` and a compressor
  # count alike).
  @spec pick() :: node()
  def pick do
    case nodes() do
      [] ->
        node()

      nodes ->
        counter = :persistent_term.get({__MODULE__, :counter})
        Enum.at(nodes, rem(:atomics.add_get(counter, 1, 1), length(nodes)))
    end
  end

  @doc false
  # `owner` gets {:lacca, server, {:error, :noconnection}} if `server` (on
  # another node) goes away with its node. Asked of the owner's node.
  @spec watch(pid(), pid()) :: :ok
  def watch(server, owner), do: GenServer.cast({__MODULE__, node(owner)}, {:watch, server, owner})

  # -- server ------------------------------------------------------------

  @impl true
  def init([]) do
    if :persistent_term.get({__MODULE__, :counter}, nil) == nil do
      :persistent_term.put({__MODULE__, :counter}, :atomics.new(1, []))
    end

    :ok = :pg.join(@scope, @group, self())
    # monitor ref => {server, owner}
    {:ok, %{}}
  end

  @impl true
  def handle_cast({:watch, server, owner}, watched) do
    {:noreply, Map.put(watched, Process.monitor(server), {server, owner})}
  end

  @impl true
  def handle_info({:DOWN, mref, :process, _, reason}, watched) do
    case Map.pop(watched, mref) do
      {{server, owner}, watched} ->
        if reason == :noconnection, do: send(owner, {:lacca, server, {:error, :noconnection}})
        {:noreply, watched}

      {nil, watched} ->
        {:noreply, watched}
    end
  end

  def handle_info(_msg, watched), do: {:noreply, watched}
end
