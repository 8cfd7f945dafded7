defmodule Lacca.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    shared =
      for name <- Lacca.Daemon.init_pool(Lacca.Daemon.pool_size()) do
        {Lacca.Daemon, name: name}
      end

    # The shared resin daemons: lazy (each resin starts on its first spawn)
    # and restarted when their resin dies.
    children =
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
    Supervisor.start_link(children,
      strategy: :one_for_one,
      name: Lacca.Supervisor,
      max_restarts: 50,
      max_seconds: 5
    )
  end
end
