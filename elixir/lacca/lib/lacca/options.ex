defmodule Lacca.Options do
  @moduledoc false
  # Validation of everything a caller hands to lacca, done once at the
  # boundary. Misuse raises ArgumentError; the result, a %Lacca.Options{},
  # is ready for the wire. The output window is called :max_buffer
  # everywhere, as the option is.

  alias Lacca.Signal

  @typedoc "One option of resin's v1 spawn request (its Opts proplist)."
  @type spawn_opt ::
          {:cd, binary()}
          | {:cd_of, pos_integer()}
          | {:env, [{binary(), binary() | nil}]}
          | {:clear_env, boolean()}
          | {:arg0, binary()}
          | {:stderr, :capture | :stdout | :discard}
          | {:stdin, :pipe | :null}
          | {:cgroup, [Lacca.cgroup_limit()]}
          | {:pty, {pos_integer(), pos_integer()}}
          | {:user, binary() | non_neg_integer()}
          | {:group, binary() | non_neg_integer()}
          | {:rlimits, [{Lacca.rlimit_name(), {Lacca.rlimit_value(), Lacca.rlimit_value()}}]}

  @typedoc """
  Validated options. Every entry point fills the common fields (`daemon`,
  `kill_timeout`, `stop_signal`, `spawn`, `max_buffer`); start/start_link
  fill `output` to `supervised`, stream/3 `input`, `lines` and `tagged`,
  run/3 `input`, `timeout` and `into`. The others keep their defaults.
  """
  @type t :: %__MODULE__{
          daemon: :shared | :dedicated,
          kill_timeout: non_neg_integer(),
          stop_signal: pos_integer(),
          spawn: [spawn_opt()],
          max_buffer: pos_integer(),
          output: :buffer | :messages,
          owner: pid() | nil,
          active: Lacca.active(),
          name: GenServer.name() | nil,
          log_output: Logger.level() | nil,
          log_prefix: binary() | nil,
          log_stderr: boolean(),
          supervised: boolean(),
          input: iodata() | Enumerable.t() | nil,
          lines: pos_integer() | :infinity | nil,
          tagged: boolean(),
          timeout: timeout(),
          into: Collectable.t(),
          node: node() | :any | nil,
          quiet: boolean()
        }

  defstruct daemon: :shared,
            kill_timeout: 5_000,
            stop_signal: 15,
            spawn: [],
            max_buffer: 1_048_576,
            output: :buffer,
            owner: nil,
            active: :flow,
            name: nil,
            log_output: nil,
            log_prefix: nil,
            log_stderr: false,
            supervised: false,
            input: nil,
            lines: nil,
            tagged: false,
            timeout: :infinity,
            into: "",
            # nil: this node; a node name or :any (Lacca.Remote)
            node: nil,
            # a server that ends :normal whatever the exit status: the
            # server of a remote run/3 or stream (Lacca.Remote), whose
            # caller gets the status as a message (no crash report)
            quiet: false

  @spawn_keys [:cd, :env, :clear_env, :arg0, :stderr, :stdin, :cgroup, :pty, :user, :group] ++
                [:rlimits]
  @common [daemon: :shared, kill_timeout: 5_000, stop_signal: :sigterm, node: nil]
  @start_defaults [output: :buffer, owner: nil, active: :flow, max_buffer: 1_048_576] ++
                    [name: nil, log_output: nil, log_prefix: nil, log_stderr: false]
  @run_defaults [input: nil, timeout: :infinity, into: ""]

  @default_max_buffer 1_048_576
  # The smallest :max_buffer. Credit comes back in grants of a quarter of it
  # (Lacca.Channel.threshold/1), so a tiny window costs a round trip to resin for every few bytes
  # of output (max_buffer: 1 made 500 `cat`s crawl for minutes).
  @min_max_buffer 1024

  @spec spawn_keys() :: [atom()]
  def spawn_keys, do: @spawn_keys

  @doc false
  # Validates command and args. Returns {exec, args}.
  @spec command!(term(), term()) :: {binary(), [binary()]}
  def command!(cmd, args) do
    unless is_binary(cmd) do
      raise ArgumentError, "expected the command to be a binary (a string), got: #{inspect(cmd)}"
    end

    if cmd == "", do: raise(ArgumentError, "expected a command, got an empty string")
    no_nul!(cmd, "the command")

    unless is_list(args) do
      raise ArgumentError,
            "expected the arguments to be a list of binaries, got: #{inspect(args)}"
    end

    Enum.each(args, fn arg ->
      unless is_binary(arg) do
        raise ArgumentError,
              "expected the arguments to be a list of binaries, got #{inspect(arg)} in: " <>
                inspect(args)
      end

      no_nul!(arg, "an argument")
    end)

    {cmd, args}
  end

  @doc false
  # Options of start/start_link.
  @spec start!(term()) :: t()
  def start!(opts) do
    opts = validate!(opts, @spawn_keys ++ @common ++ @start_defaults)
    output = one_of!(opts, :output, [:buffer, :messages])
    owner = opts[:owner]

    unless owner == nil or is_pid(owner) do
      raise ArgumentError,
            "invalid value for :owner option: expected a pid, got: #{inspect(owner)}"
    end

    active = opts[:active]

    unless active in [:flow, true, false, :once] or (is_integer(active) and active > 0) do
      raise ArgumentError,
            "invalid value for :active option: expected :flow, true, false, :once or a " <>
              "positive integer, got: #{inspect(active)}"
    end

    common(opts)
    |> Map.merge(%{output: output, owner: owner, active: active})
    |> Map.merge(name!(opts[:name]))
    |> Map.merge(log!(opts))
    |> then(&struct!(__MODULE__, &1))
  end

  # :name of start/start_link/child_spec: any GenServer name form.
  defp name!(nil), do: %{name: nil}
  defp name!(name) when is_atom(name) and name not in [true, false], do: %{name: name}
  defp name!({:global, _} = name), do: %{name: name}
  defp name!({:via, mod, _} = name) when is_atom(mod), do: %{name: name}

  defp name!(other),
    do: bad!(:name, "an atom, {:global, term} or {:via, module, term}", other)

  @log_levels [:emergency, :alert, :critical, :error, :warning, :notice, :info, :debug]

  # :log_output, :log_prefix, :log_stderr of start/start_link/child_spec.
  defp log!(opts) do
    level = opts[:log_output]

    unless level == nil or level in @log_levels do
      bad!(:log_output, Enum.map_join(@log_levels, ", ", &inspect/1), level, "nil or one of ")
    end

    prefix = opts[:log_prefix]

    unless prefix == nil or is_binary(prefix) do
      bad!(:log_prefix, "a binary", prefix)
    end

    log_stderr = opts[:log_stderr]
    unless is_boolean(log_stderr), do: bad!(:log_stderr, "a boolean", log_stderr)

    cond do
      log_stderr and opts[:pty] not in [nil, false] ->
        raise ArgumentError,
              "log_stderr: true cannot be combined with :pty (stdout and stderr are one stream)"

      level == nil and (prefix != nil or log_stderr) ->
        raise ArgumentError, "the :log_prefix and :log_stderr options need :log_output"

      log_stderr and opts[:stderr] in [:stdout, :discard] ->
        raise ArgumentError,
              "log_stderr: true needs stderr: :capture, got: stderr: #{inspect(opts[:stderr])}"

      true ->
        :ok
    end

    %{log_output: level, log_prefix: prefix, log_stderr: log_stderr}
  end

  @doc false
  # Options of stream/3 and stream!/3.
  @spec stream!(term()) :: t()
  def stream!(opts) do
    opts =
      validate!(
        opts,
        @spawn_keys ++ @common ++ [max_buffer: @default_max_buffer, input: nil, lines: false]
      )

    opts = if pty?(opts), do: opts, else: Keyword.put_new(opts, :stderr, :discard)
    spec = common(opts)
    # A stream runs where and when it is enumerated: it takes the working
    # directory now, as it expands a relative :cd now.
    spec = %{spec | spawn: Enum.map(spec.spawn, &cwd_now/1)}

    lines =
      case opts[:lines] do
        false -> nil
        true -> :infinity
        n when is_integer(n) and n > 0 -> n
        other -> bad!(:lines, "a boolean or a positive integer (the longest line)", other)
      end

    input = stream_input!(opts[:input])

    case {input, opts[:stdin]} do
      {nil, _} ->
        :ok

      {_, :null} ->
        raise ArgumentError, "the :input option cannot be combined with stdin: :null"

      _ ->
        :ok
    end

    # Without :input stdin is /dev/null, or with stdin: :pipe an empty pipe
    # (a terminal: its EOF character at once).
    stdin = if pty?(opts), do: :pipe, else: opts[:stdin]

    {spawn, input} =
      case {input, stdin} do
        {nil, :pipe} -> {spec.spawn, []}
        {nil, _} -> {spec.spawn ++ [{:stdin, :null}], nil}
        _ -> {spec.spawn, input}
      end

    struct!(
      __MODULE__,
      Map.merge(spec, %{
        spawn: spawn,
        input: input,
        lines: lines,
        tagged: opts[:stderr] == :capture
      })
    )
  end

  # :input of stream/3: iodata (one element) or an Enumerable of iodata.
  defp stream_input!(nil), do: nil
  defp stream_input!(bin) when is_binary(bin), do: [bin]

  defp stream_input!(input) do
    cond do
      is_list(input) and iodata?(input) ->
        [input]

      Enumerable.impl_for(input) != nil ->
        input

      true ->
        bad!(:input, "iodata or an Enumerable of iodata", input)
    end
  end

  defp iodata?(list) do
    IO.iodata_length(list)
    true
  rescue
    ArgumentError -> false
  end

  @doc false
  # Options of run/shell (their window is the default :max_buffer).
  @spec run!(term()) :: t()
  def run!(opts) do
    opts = validate!(opts, @spawn_keys ++ @common ++ @run_defaults)
    spec = common(opts)

    input =
      case opts[:input] do
        nil ->
          nil

        input ->
          try do
            IO.iodata_length(input)
            input
          rescue
            ArgumentError ->
              raise ArgumentError,
                    "invalid value for :input option: expected iodata, got: #{inspect(input)}"
          end
      end

    if input != nil and opts[:stdin] == :null do
      raise ArgumentError, "the :input option cannot be combined with stdin: :null"
    end

    # A terminal has no /dev/null: without :input it gets its EOF character
    # at once (unless stdin: :pipe keeps it open).
    input = if input == nil and pty?(opts) and opts[:stdin] != :pipe, do: "", else: input

    timeout =
      case opts[:timeout] do
        :infinity -> :infinity
        t when is_integer(t) and t >= 0 -> t
        t -> bad!(:timeout, "a non-negative integer (milliseconds) or :infinity", t)
      end

    into = opts[:into]

    if Collectable.impl_for(into) == nil do
      bad!(:into, "a Collectable", into)
    end

    struct!(__MODULE__, Map.merge(spec, %{input: input, timeout: timeout, into: into}))
  end

  defp common(opts) do
    stop_signal =
      case Signal.to_number(opts[:stop_signal]) do
        {:ok, n} -> n
        {:error, _} -> bad!(:stop_signal, "a signal name or number", opts[:stop_signal])
      end

    %{
      daemon: one_of!(opts, :daemon, [:shared, :dedicated]),
      kill_timeout: non_neg_integer!(opts, :kill_timeout),
      stop_signal: stop_signal,
      spawn: spawn_opts!(opts),
      max_buffer: Keyword.get(opts, :max_buffer, @default_max_buffer) |> max_buffer!(),
      node: node!(opts[:node])
    }
  end

  # :node: nil or this node (here), another node's name, or :any.
  defp node!(nil), do: nil
  defp node!(:any), do: :any
  defp node!(node) when node == node(), do: nil

  defp node!(node) when is_atom(node) and node not in [true, false] do
    if String.contains?(Atom.to_string(node), "@"),
      do: node,
      else: bad!(:node, "a node name (name@host) or :any", node)
  end

  defp node!(other), do: bad!(:node, "a node name (an atom, name@host) or :any", other)

  # The BEAM's OS pid, for {:cd_of, pid}: resin reads the BEAM's working
  # directory at the spawn (/proc/PID/cwd, ~3 µs there) instead of lacca
  # fetching it, which runs on a dirty I/O scheduler (median 50-120 µs
  # after an idle gap, p99 ~700 µs). The pid is looked up once.
  defp cwd_now({:cd_of, _}) do
    case beam_cwd() do
      {:ok, cwd} ->
        {:cd, cwd}

      {:error, reason} ->
        raise File.Error, reason: reason, action: "get current working directory"
    end
  end

  defp cwd_now(opt), do: opt

  @doc false
  # The BEAM's working directory, as File.cwd/0 gives it (for a stream, and
  # for a resin that cannot read it itself: see Lacca.Daemon's cd_of).
  @spec beam_cwd() :: {:ok, binary()} | {:error, File.posix()}
  def beam_cwd do
    case :prim_file.get_cwd() do
      {:ok, cwd} -> {:ok, IO.chardata_to_string(cwd)}
      {:error, reason} -> {:error, reason}
    end
  end

  defp beam_os_pid do
    case :persistent_term.get({__MODULE__, :os_pid}, nil) do
      nil ->
        pid = String.to_integer(System.pid())
        :persistent_term.put({__MODULE__, :os_pid}, pid)
        pid

      pid ->
        pid
    end
  end

  defp validate!(opts, allowed) do
    unless Keyword.keyword?(opts) do
      raise ArgumentError, "expected options to be a keyword list, got: #{inspect(opts)}"
    end

    Keyword.validate!(opts, allowed)
  end

  # lacca spawn options -> the Opts proplist of the v1 spawn request.
  defp spawn_opts!(opts) do
    # On another node (:node), the default is the working directory of
    # that node's resin, not a directory of this machine.
    base =
      case {opts[:cd], node!(opts[:node])} do
        # The BEAM's working directory at the spawn, read by resin.
        {nil, nil} -> [{:cd_of, beam_os_pid()}]
        {nil, _remote} -> []
        {cd, _} -> [{:cd, cd |> chardata!(:cd) |> Path.expand()}]
      end

    for {:cd, cd} <- base, do: no_nul!(cd, ":cd option")

    env =
      case opts[:env] do
        nil -> []
        env -> [{:env, env!(env)}]
      end

    clear_env =
      case opts[:clear_env] do
        nil -> []
        b when is_boolean(b) -> [{:clear_env, b}]
        other -> bad!(:clear_env, "a boolean", other)
      end

    arg0 =
      case opts[:arg0] do
        nil ->
          []

        a when is_binary(a) ->
          no_nul!(a, ":arg0 option")
          [{:arg0, a}]

        other ->
          bad!(:arg0, "a binary", other)
      end

    stderr =
      case opts[:stderr] do
        nil -> []
        _ -> [{:stderr, one_of!(opts, :stderr, [:capture, :stdout, :discard])}]
      end

    stdin =
      case opts[:stdin] do
        nil -> []
        _ -> [{:stdin, one_of!(opts, :stdin, [:pipe, :null])}]
      end

    {stderr, stdin, pty} =
      case pty!(opts) do
        nil -> {stderr, stdin, []}
        # The terminal is stdin: never /dev/null, whatever the entry point adds.
        size -> {[], [{:stdin, :pipe}], [{:pty, size}]}
      end

    base ++
      env ++
      clear_env ++
      arg0 ++
      stderr ++
      stdin ++
      cgroup!(opts[:cgroup]) ++
      pty ++
      id!(opts, :user) ++ id!(opts, :group) ++ rlimits!(opts[:rlimits])
  end

  defp pty?(opts), do: opts[:pty] not in [nil, false]

  @default_pty [rows: 24, cols: 80]
  # A terminal's rows and columns are unsigned shorts (struct winsize).
  @max_winsize 65_535

  # pty: true | [rows: r, cols: c] -> {rows, cols}; nil without a terminal.
  defp pty!(opts) do
    size =
      case opts[:pty] do
        nil -> nil
        false -> nil
        true -> {@default_pty[:rows], @default_pty[:cols]}
        kw when is_list(kw) -> pty_size!(kw)
        other -> bad!(:pty, "true, false or [rows: rows, cols: cols]", other)
      end

    cond do
      size == nil ->
        nil

      opts[:stdin] == :null ->
        raise ArgumentError,
              "stdin: :null cannot be combined with :pty (the terminal is stdin)"

      opts[:stderr] not in [nil, :stdout] ->
        raise ArgumentError,
              "stderr: #{inspect(opts[:stderr])} cannot be combined with :pty " <>
                "(stdout and stderr are one stream)"

      true ->
        size
    end
  end

  defp pty_size!(given) do
    expected = "true, false or [rows: rows, cols: cols] (integers 1..#{@max_winsize})"

    # Errors show the value as given, not with the defaults merged in.
    kw =
      try do
        validate!(given, @default_pty)
      rescue
        ArgumentError -> bad!(:pty, expected, given)
      end

    case {kw[:rows], kw[:cols]} do
      {r, c} when r in 1..@max_winsize//1 and c in 1..@max_winsize//1 -> {r, c}
      _ -> bad!(:pty, expected, given)
    end
  end

  @doc false
  # Checks a terminal size given to Lacca.resize/3.
  @spec winsize!(term(), term()) :: {pos_integer(), pos_integer()}
  def winsize!(rows, cols) do
    for {name, n} <- [rows: rows, cols: cols], not (is_integer(n) and n in 1..@max_winsize) do
      raise ArgumentError,
            "expected #{name} to be an integer 1..#{@max_winsize}, got: #{inspect(n)}"
    end

    {rows, cols}
  end

  # Linux uids and gids are 32 bits; 2^32 - 1 means "unchanged" to the kernel.
  @max_id 4_294_967_294

  # user: / group: a name or a numeric id.
  defp id!(opts, key) do
    case opts[key] do
      nil ->
        []

      n when is_integer(n) and n >= 0 and n <= @max_id ->
        [{key, n}]

      name when is_binary(name) and name != "" ->
        no_nul!(name, "#{inspect(key)} option")
        [{key, name}]

      other ->
        bad!(key, "a name (a non-empty binary) or a numeric id 0..#{@max_id}", other)
    end
  end

  @rlimit_names ~w(as core cpu data fsize locks memlock msgqueue nice nofile nproc rss rtprio
    rttime sigpending stack)a
  # RLIM_INFINITY is :infinity; finite limits fit a signed 64-bit integer.
  @max_rlimit 9_223_372_036_854_775_807

  @doc false
  # The names the :rlimits option accepts (setrlimit(2)'s RLIMIT_*, lowercase).
  @spec rlimit_names() :: [Lacca.rlimit_name()]
  def rlimit_names, do: @rlimit_names

  # rlimits: [nofile: n, cpu: {soft, hard}, as: :infinity, ...]
  defp rlimits!(nil), do: []
  defp rlimits!([]), do: []

  defp rlimits!(limits) when is_list(limits) do
    expected =
      "a keyword list of #{Enum.map_join(@rlimit_names, ", ", &inspect/1)}, each a " <>
        "limit (a non-negative integer or :infinity) or {soft, hard} with soft <= hard"

    checked =
      Enum.map(limits, fn
        {name, {soft, hard}} when name in @rlimit_names ->
          if rlimit?(soft) and rlimit?(hard) and rlimit_le?(soft, hard),
            do: {name, {soft, hard}},
            else: bad!(:rlimits, expected, limits)

        {name, limit} when name in @rlimit_names ->
          if rlimit?(limit), do: {name, {limit, limit}}, else: bad!(:rlimits, expected, limits)

        _ ->
          bad!(:rlimits, expected, limits)
      end)

    [{:rlimits, checked}]
  end

  defp rlimits!(other), do: bad!(:rlimits, "a keyword list", other)

  defp rlimit?(:infinity), do: true
  defp rlimit?(n), do: is_integer(n) and n >= 0 and n <= @max_rlimit

  defp rlimit_le?(_soft, :infinity), do: true
  defp rlimit_le?(:infinity, _hard), do: false
  defp rlimit_le?(soft, hard), do: soft <= hard

  # cgroup: [memory_max: bytes, pids_max: n, cpu_max: {quota_us, period_us}]
  defp cgroup!(nil), do: []
  defp cgroup!([]), do: []

  defp cgroup!(limits) when is_list(limits) do
    expected =
      "a keyword list of memory_max, pids_max (positive integers) and cpu_max " <>
        "({quota_us, period_us})"

    checked =
      Enum.map(limits, fn
        {key, n} when key in [:memory_max, :pids_max] and is_integer(n) and n > 0 ->
          {key, n}

        {:cpu_max, {q, p}} when is_integer(q) and q > 0 and is_integer(p) and p > 0 ->
          {:cpu_max, {q, p}}

        _ ->
          bad!(:cgroup, expected, limits)
      end)

    [{:cgroup, checked}]
  end

  defp cgroup!(other), do: bad!(:cgroup, "a keyword list", other)

  defp env!(env) when is_map(env), do: env!(Map.to_list(env))

  defp env!(env) when is_list(env) do
    Enum.map(env, fn
      {name, value} when is_binary(name) and (is_binary(value) or is_nil(value)) ->
        if name == "" or String.contains?(name, ["=", <<0>>]) do
          raise ArgumentError,
                "invalid value for :env option: invalid variable name #{inspect(name)} " <>
                  "(it must be non-empty and contain no \"=\" and no NUL byte)"
        end

        if is_binary(value), do: no_nul!(value, "the value of the environment variable #{name}")
        {name, value}

      other ->
        raise ArgumentError,
              "invalid value for :env option: expected {name, value} with binaries " <>
                "(value nil to unset), got: #{inspect(other)}"
    end)
  end

  defp env!(other), do: bad!(:env, "a map or a list of {name, value} tuples", other)

  defp one_of!(opts, key, allowed) do
    value = opts[key]

    if value in allowed do
      value
    else
      bad!(key, Enum.map_join(allowed, ", ", &inspect/1), value, "one of ")
    end
  end

  defp max_buffer!(max_buffer) do
    case max_buffer do
      n when is_integer(n) and n >= @min_max_buffer -> n
      other -> bad!(:max_buffer, "an integer of at least #{@min_max_buffer} (bytes)", other)
    end
  end

  defp non_neg_integer!(opts, key) do
    case opts[key] do
      n when is_integer(n) and n >= 0 -> n
      other -> bad!(key, "a non-negative integer", other)
    end
  end

  defp chardata!(value, key) do
    IO.chardata_to_string(value)
  rescue
    _ -> bad!(key, "a binary (a path)", value)
  end

  @spec bad!(atom(), String.t(), term()) :: no_return()
  @spec bad!(atom(), String.t(), term(), String.t()) :: no_return()
  defp bad!(key, expected, value, prefix \\ "") do
    raise ArgumentError,
          "invalid value for #{inspect(key)} option: expected #{prefix}#{expected}, got: " <>
            inspect(value)
  end

  defp no_nul!(bin, what) do
    if String.contains?(bin, <<0>>) do
      raise ArgumentError, "#{what} contains a NUL byte: #{inspect(bin)}"
    end

    :ok
  end
end
