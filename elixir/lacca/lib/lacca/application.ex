defmodule Lacca.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    prestart? = Lacca.Daemon.prestart?()
    names = Lacca.Daemon.init_pool(Lacca.Daemon.pool_size())

    # The shared resin daemons, restarted when their resin dies. A restarted
    # daemon starts its resin on its first spawn (lazily).
    shared = for name <- names, do: {Lacca.Daemon, name: name}

    # Lacca.nodes/0 and node: (the :pg group of the nodes running lacca).
    children =
      Lacca.Cluster.children() ++
        shared ++
        [
          # Dedicated daemons (daemon: :dedicated), one per OS process.
          {DynamicSupervisor, name: Lacca.DaemonSupervisor, strategy: :one_for_one},
          # One Lacca.Process per OS process started with start/start_link. It is
          # stopped first when the application stops, so each process server can
          # stop its OS process before resin goes.
          {DynamicSupervisor, name: Lacca.ProcessSupervisor, strategy: :one_for_one}
        ]

    # Each death of resin restarts the daemon; allow a burst of them.
    result =
      Supervisor.start_link(children,
        strategy: :one_for_one,
        name: Lacca.Supervisor,
        max_restarts: 50,
        max_seconds: 5
      )

    # config :lacca, :prestart (default true): each shared daemon starts its
    # resin now, in the background, so the first spawn does not pay for a
    # resin start. Casts: the application's start returns at once, and spawns
    # sent from now on queue up behind the prestart.
    with {:ok, _} <- result, true <- prestart? do
      Enum.each(names, &Lacca.Daemon.prestart/1)
    end

    result
  end
end
