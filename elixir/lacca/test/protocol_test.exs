defmodule Lacca.ProtocolTest do
  use ExUnit.Case, async: true

  alias Lacca.Protocol

  @vectors_file Path.expand("../../../docs/protocol-vectors.txt", __DIR__)
  @external_resource @vectors_file

  # "<protocol> <direction> <name> | <hex>[,<hex>...] | <decoded form>"
  defp vectors do
    @vectors_file
    |> File.read!()
    |> String.split("\n")
    |> Enum.reject(&(String.trim(&1) == "" or String.starts_with?(&1, "#")))
    |> Enum.map(fn line ->
      [head, hex, decoded] = String.split(line, " | ", parts: 3)
      [protocol, direction, name] = String.split(head)

      %{
        protocol: protocol,
        direction: String.to_existing_atom(direction),
        name: name,
        packets: hex |> String.split(",") |> Enum.map(&Base.decode16!(&1, case: :lower)),
        decoded: String.trim(decoded)
      }
    end)
  end

  # The decoded form of a v1 vector is Erlang syntax: let Erlang parse it.
  defp erlang_term(text) do
    {:ok, tokens, _} = :erl_scan.string(String.to_charlist(text <> "."))
    {:ok, exprs} = :erl_parse.parse_exprs(tokens)
    {:value, term, _} = :erl_eval.exprs(exprs, :erl_eval.new_bindings())
    term
  end

  # OTP 26+ encodes atoms with tag 119 where OTP 25 used 100.
  @beam_atom_tag :erlang.term_to_binary(:a) |> binary_part(1, 1)

  test "the vectors file has v1 vectors of every frame type" do
    names = for %{protocol: "v1", name: name} <- vectors(), do: name
    assert length(names) > 30

    types =
      for %{protocol: "v1", packets: [<<type, _::binary>>]} <- vectors(), uniq: true, do: type

    assert Enum.sort(types) == [0x00, 0x01, 0x10, 0x11, 0x12, 0x20, 0x21, 0x22, 0x23]
  end

  test "every v1 vector decodes to its decoded form and encodes back" do
    for %{protocol: "v1", direction: dir, name: name, packets: [bin], decoded: text} <- vectors() do
      term = erlang_term(text)
      assert Protocol.decode(dir, bin) == {:ok, term}, "decode #{name}"
      encoded = Protocol.encode(dir, term)

      case bin do
        <<type, 131, _::binary>> when type in [0x10, 0x20] ->
          # ETF: the same term; the same bytes where the encoder agrees.
          assert Protocol.decode(dir, encoded) == {:ok, term}, "round trip #{name}"

          # CONTROL vectors come from a BEAM: where that BEAM encoded atoms
          # like this one (section 6), the bytes must match too.
          with :c2r <- dir,
               <<0x10, 131, 104, _arity, tag, _::binary>> <- bin,
               true <- <<tag>> == @beam_atom_tag do
            assert encoded == bin, "encode #{name} (bytes)"
          end

        _ ->
          assert encoded == bin, "encode #{name}"
      end
    end
  end

  test "the v0 echo session replayed against a real resin" do
    session = for %{protocol: "v0", name: "session_echo_" <> _} = v <- vectors(), do: v
    requests = for %{direction: :c2r} = v <- session, packet <- v.packets, do: packet
    expected = for %{direction: :r2c} = v <- session, packet <- v.packets, do: packet
    assert requests != [] and expected != []

    {:ok, resin} = Lacca.Resin.find()
    port = Port.open({:spawn_executable, resin}, [:binary, {:packet, 2}, :exit_status])

    try do
      Enum.each(requests, &Port.command(port, &1))

      for packet <- expected do
        assert_receive {^port, {:data, ^packet}}, 5_000
      end
    after
      Port.close(port)
    end
  end

  test "decode rejects what is not a frame" do
    assert Protocol.decode(:r2c, <<>>) == {:error, :zero_length_packet}
    assert Protocol.decode(:r2c, <<0x99, 1>>) == {:error, {:bad_frame, 0x99}}
    assert Protocol.decode(:r2c, <<0x23, 0, 0, 0, 1, 9>>) == {:error, {:bad_frame, 0x23}}
    assert Protocol.decode(:c2r, <<0x21, 0, 0, 0, 1>>) == {:error, {:bad_frame, 0x21}}
    assert {:error, {:bad_term, _}} = Protocol.decode(:r2c, <<0x20, 131, 255>>)
    assert {:error, {:bad_term, _}} = Protocol.decode(:r2c, <<0x20, 1, 2>>)
  end

  test "events are decoded safely: no new atoms" do
    bin = <<131, 100, 0, 20, "lacca_surely_no_atom">>
    assert {:error, {:bad_term, _}} = Protocol.decode(:r2c, <<0x20>> <> bin)
  end

  test "every errno atom resin may send exists" do
    for atom <- Protocol.known_atoms() do
      etf = :erlang.term_to_binary({:spawn_error, 1, atom})
      assert {:ok, {:spawn_error, 1, ^atom}} = Protocol.decode_term(etf)
    end
  end

  test "limits" do
    assert Protocol.max_data() + 5 == Protocol.max_packet()
    assert Protocol.stdin_window() == 4
    assert Protocol.version() == 1
  end
end
