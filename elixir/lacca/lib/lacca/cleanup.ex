defmodule Lacca.Cleanup do
  @moduledoc false
  # The fallback for a resin that died without cleaning up (SIGKILL, OOM
  # killer). Its children died with it (PR_SET_PDEATHSIG), but descendants
  # that left their process group (setsid, double-forked daemons) did not.
  # Every one of them carries resin's cookie in its environment,
  # RESIN_TREE=<resin pid>.<resin start time>.<serial>, unless it cleared its
  # environment: find them in /proc and SIGKILL them, again until no new one
  # appears (they may fork while being killed). No shell is involved.

  require Logger

  # How long to keep looking for processes that fork while being killed.
  @deadline_ms 2_000

  @doc false
  # The cookie prefix of the resin with this OS pid (nil when it is gone).
  @spec cookie_prefix(pos_integer()) :: binary() | nil
  def cookie_prefix(os_pid) do
    case start_time(os_pid) do
      nil -> nil
      start -> "RESIN_TREE=#{os_pid}.#{start}."
    end
  end

  @doc false
  # SIGKILL the process groups `groups` (leader pids) and every process
  # carrying the cookie `prefix`, until none is left or the deadline passed.
  @spec kill_all(binary() | nil, [pos_integer()]) :: :ok
  def kill_all(prefix, groups) do
    # The tree is walked before any group is killed: killing a parent first
    # would orphan a child that cleared its environment out of reach.
    snapshot = if prefix, do: prefix |> holders() |> subtree(), else: []
    kill(Enum.map(groups, &"-#{&1}"))
    kill(for {pid, _start} <- snapshot, do: Integer.to_string(pid))
    if prefix, do: chase(prefix, MapSet.new(snapshot), deadline())
    :ok
  end

  defp deadline, do: System.monotonic_time(:millisecond) + @deadline_ms

  defp chase(prefix, killed, deadline) do
    # The holders and everything under them in the live tree, walked before
    # any is killed: a descendant that cleared its environment is found only
    # through its living parent (resin's sentinel does the same).
    fresh = prefix |> holders() |> subtree() |> Enum.reject(&MapSet.member?(killed, &1))

    cond do
      fresh == [] ->
        :ok

      System.monotonic_time(:millisecond) > deadline ->
        :ok

      true ->
        kill(for {pid, _start} <- fresh, do: Integer.to_string(pid))
        chase(prefix, MapSet.union(killed, MapSet.new(fresh)), deadline)
    end
  end

  @doc false
  # {pid, start time} of every live process whose environment holds the cookie.
  @spec holders(binary()) :: [{pos_integer(), non_neg_integer()}]
  def holders(prefix) do
    for name <- proc_entries(),
        pid = parse_pid(name),
        pid != nil,
        holds?(pid, prefix),
        start = start_time(pid),
        start != nil,
        do: {pid, start}
  end

  # {pid, start time} of the given processes and all their descendants.
  defp subtree(roots) do
    walk(Enum.map(roots, &elem(&1, 0)), MapSet.new(), [])
  end

  defp walk([], _seen, acc), do: acc

  defp walk([pid | rest], seen, acc) do
    cond do
      MapSet.member?(seen, pid) ->
        walk(rest, seen, acc)

      start = start_time(pid) ->
        walk(children_of(pid) ++ rest, MapSet.put(seen, pid), [{pid, start} | acc])

      true ->
        walk(rest, MapSet.put(seen, pid), acc)
    end
  end

  defp children_of(pid) do
    case File.ls("/proc/#{pid}/task") do
      {:ok, tids} ->
        Enum.flat_map(tids, fn tid ->
          case File.read("/proc/#{pid}/task/#{tid}/children") do
            {:ok, text} -> text |> String.split() |> Enum.map(&String.to_integer/1)
            {:error, _} -> []
          end
        end)

      {:error, _} ->
        []
    end
  end

  defp proc_entries do
    case File.ls("/proc") do
      {:ok, names} -> names
      {:error, _} -> []
    end
  end

  defp parse_pid(name) do
    case Integer.parse(name) do
      {pid, ""} -> pid
      _ -> nil
    end
  end

  defp holds?(pid, prefix) do
    case File.read("/proc/#{pid}/environ") do
      {:ok, environ} ->
        String.starts_with?(environ, prefix) or String.contains?(environ, <<0>> <> prefix)

      {:error, _} ->
        false
    end
  end

  # Field 22 of /proc/<pid>/stat (clock ticks since boot), counted after the
  # command name, which may itself hold spaces and parentheses.
  defp start_time(pid) do
    with {:ok, stat} <- File.read("/proc/#{pid}/stat"),
         [_ | _] = matches <- :binary.matches(stat, ") "),
         {pos, len} = List.last(matches),
         rest = binary_part(stat, pos + len, byte_size(stat) - pos - len),
         start when is_binary(start) <- Enum.at(String.split(rest, " "), 19) do
      String.to_integer(start)
    else
      _ -> nil
    end
  end

  defp kill([]), do: :ok

  defp kill(targets) do
    # kill(1), given its arguments as a list: no shell parses them. It exits
    # 1 when some target is gone already: expected, ignored. OTP has no
    # kill(2); without a kill executable (a slim image) nothing is sent from
    # here: resin's sentinel, which does the same cleanup, is the only one.
    # Cleanup must never fail the caller whatever happens.
    _ =
      case System.find_executable("kill") do
        nil ->
          Logger.warning(
            "lacca: no kill executable on the PATH: process groups of a dead resin " <>
              "are left to its sentinel"
          )

        kill ->
          System.cmd(kill, ["-KILL", "--" | targets], stderr_to_stdout: true)
      end

    :ok
  rescue
    _ -> :ok
  end
end
