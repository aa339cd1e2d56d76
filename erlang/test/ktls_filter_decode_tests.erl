%% Property tests of the filter's decoder: random terms and control messages
%% encoded the way an OTP 25 node sends them (dist header, atom cache
%% references, fragments), run through the C++ filter with
%% ktls_filter_nif:filter_decode/1, must come back as the same terms; cut or
%% corrupted packets must be refused with a reason, never crash the VM.
-module(ktls_filter_decode_tests).

-include_lib("eunit/include/eunit.hrl").

-define(RUNS, 40).

%% ------------------------------------------------------------------
%% Properties
%% ------------------------------------------------------------------

roundtrip_plain_test_() ->
    {timeout, 60, fun() -> forall(fun(Seed) -> roundtrip(Seed, plain) end) end}.

roundtrip_atom_cache_test_() ->
    {timeout, 60, fun() -> forall(fun(Seed) -> roundtrip(Seed, cache) end) end}.

roundtrip_fragments_test_() ->
    {timeout, 60, fun() -> forall(fun(Seed) -> roundtrip(Seed, fragments) end) end}.

truncated_packets_are_refused_test_() ->
    {timeout, 60, fun() -> forall(fun truncated/1) end}.

random_bytes_never_crash_test_() ->
    {timeout, 60, fun() -> forall(fun random_bytes/1) end}.

forall(Prop) ->
    lists:foreach(fun(Seed) ->
                          _ = rand:seed(exsss, {Seed, Seed * 7, Seed * 13}),
                          try Prop(Seed)
                          catch C:R:St -> erlang:raise(C, {seed, Seed, R}, St)
                          end
                  end, lists:seq(1, ?RUNS)).

%% A stream of messages in one channel decodes to exactly the terms sent.
roundtrip(_Seed, Mode) ->
    Msgs = [control() || _ <- lists:seq(1, 8)],
    {Packets, Completing} = encode_stream(Msgs, Mode),
    Results = ktls_filter_nif:filter_decode(Packets),
    ?assertEqual(length(Packets), length(Results)),
    Decoded = [{C, P} || {R, true} <- lists:zip(Results, Completing),
                         {keep, safe, _, _, C, P, _, _} <- [R]],
    Expected = [{C, case P of none -> '$none'; _ -> P end} || {C, P} <- Msgs],
    ?assertEqual(Expected, Decoded).

%% Any cut of a valid packet is refused with a reason that names a byte.
truncated(_Seed) ->
    {C, P} = control(),
    [Packet] = element(1, encode_stream([{C, P}], plain)),
    Cut = rand:uniform(byte_size(Packet) - 1),
    case ktls_filter_nif:filter_decode([binary_part(Packet, 0, Cut)]) of
        [{close, Why}] -> ?assertNotEqual(nomatch, binary:match(Why, <<"at byte">>));
        Other -> ?assertEqual(close, Other)
    end.

random_bytes(_Seed) ->
    Packets = [case rand:uniform(3) of
                   1 -> rand:bytes(rand:uniform(64));
                   2 -> <<131, $D, (rand:bytes(rand:uniform(64)))/binary>>;
                   3 -> <<131, $D, 0, 104, (rand:bytes(rand:uniform(64)))/binary>>
               end || _ <- lists:seq(1, 5)],
    Results = ktls_filter_nif:filter_decode(Packets),
    ?assert(is_list(Results)).

%% ------------------------------------------------------------------
%% Attack shapes (the policy's answers on real encodings)
%% ------------------------------------------------------------------

erpc_call_is_refused_and_rewritten_test() ->
    Ref = make_ref(),
    Ctrl = {29, make_ref(), self(), self(), {erpc, execute_call, 4}, [monitor]},
    [{drop, unsafe, _, spawn_request, Ctrl, _, _, Bytes}] =
        decode([{Ctrl, [Ref, os, cmd, ["id"]]}]),
    %% The rewritten request spawns ktls_filter_handler:spawn_request_denied(Ref).
    [{drop, unsafe, _, spawn_request, Ctrl2, [Ref], _, _}] =
        ktls_filter_nif:filter_decode([Bytes]),
    ?assertEqual({ktls_filter_handler, spawn_request_denied, 1}, element(5, Ctrl2)).

allowed_erpc_is_kept_test() ->
    Ctrl = {29, make_ref(), self(), self(), {erpc, execute_call, 4}, [monitor]},
    ?assertMatch([{keep, safe, _, spawn_request, _, _, _, _}],
                 decode([{Ctrl, [make_ref(), erlang, node, []]}])).

rex_cast_is_dropped_test() ->
    Ctrl = {6, self(), '', rex},
    Cast = {'$gen_cast', {cast, os, putenv, ["X", "1"], self()}},
    ?assertMatch([{drop, unsafe, _, reg_send, _, _, _, _}], decode([{Ctrl, Cast}])).

kernel_sup_start_child_is_dropped_test() ->
    Ctrl = {6, self(), '', kernel_sup},
    Call = {'$gen_call', {self(), make_ref()}, {start_child, #{id => x, start => {os, cmd, []}}}},
    ?assertMatch([{drop, unsafe, _, reg_send, _, _, _, _}], decode([{Ctrl, Call}])).

io_request_with_mfa_is_dropped_test() ->
    Ctrl = {6, self(), '', standard_error},
    Req = {io_request, self(), make_ref(), {put_chars, unicode, os, cmd, ["id"]}},
    ?assertMatch([{drop, drop, _, reg_send, _, _, _, _}], decode([{Ctrl, Req}])).

io_format_to_remote_group_leader_is_kept_test() ->
    Req = {io_request, self(), make_ref(), {put_chars, unicode, io_lib, format, ["~p", [x]]}},
    ?assertMatch([{keep, safe, _, send, _, _, _, _}], decode([{{2, '', self()}, Req}])).

decode(Msgs) ->
    ktls_filter_nif:filter_decode(element(1, encode_stream(Msgs, plain))).

%% ------------------------------------------------------------------
%% Generators
%% ------------------------------------------------------------------

%% A control message of OTP 25 with plausible fields; payload or none.
control() ->
    P = pid(),
    Q = pid(),
    R = make_ref(),
    Choices =
        [{{1, P, Q}, none},
         {{2, '', Q}, term(3)},
         {{3, P, Q, term(2)}, none},
         {{6, P, '', reg_name()}, term(3)},
         {{7, P, Q}, none},
         {{8, P, Q, term(2)}, none},
         {{12, '', Q, term(1)}, term(3)},
         {{19, P, Q, R}, none},
         {{20, P, reg_name(), R}, none},
         {{21, P, Q, R, term(2)}, none},
         {{22, P, Q}, term(3)},
         {{24, P, Q}, term(2)},
         {{28, P, Q, R}, term(2)},
         {{31, R, Q, 0, P}, none},
         {{33, P, R}, not_a_request(term(3))},
         {{35, rand:uniform(1 bsl 40), P, Q}, none},
         {{36, rand:uniform(1 bsl 40), P, Q}, none}],
    lists:nth(rand:uniform(length(Choices)), Choices).

%% OTP's request shapes to an alias are refused (its owner may be a system
%% process): the round trip sends the others.
not_a_request({'$gen_call', _, _} = T) -> [T];
not_a_request(T) -> T.

reg_name() ->
    lists:nth(rand:uniform(4), [app_server, 'üñí_name', some_registered_process, x]).

pid() ->
    case rand:uniform(2) of
        1 -> self();
        2 -> remote_pid()
    end.

%% A pid of another node: NEW_PID_EXT by hand.
remote_pid() ->
    Node = atom_to_binary('other@127.0.0.1'),
    binary_to_term(<<131, 88, 119, (byte_size(Node)), Node/binary,
                     (rand:uniform(32767)):32, 0:32, (rand:uniform(1 bsl 31)):32>>).

term(0) ->
    leaf();
term(D) ->
    case rand:uniform(8) of
        1 -> list_to_tuple([term(D - 1) || _ <- lists:seq(1, rand:uniform(4) - 1)]);
        2 -> [term(D - 1) || _ <- lists:seq(1, rand:uniform(4) - 1)];
        3 -> maps:from_list([{leaf(), term(D - 1)} || _ <- lists:seq(1, rand:uniform(3))]);
        4 -> [leaf() | leaf()];
        5 -> {'$gen_call', {self(), make_ref()}, term(D - 1)};
        _ -> leaf()
    end.

leaf() ->
    case rand:uniform(16) of
        1 -> rand:uniform(255);
        2 -> rand:uniform(1 bsl 31) - (1 bsl 30);
        3 -> (rand:uniform(1 bsl 62)) * (1 bsl 64) * (2 * rand:uniform(2) - 3);
        4 -> rand:uniform() * 1.0e10;
        5 -> lists:nth(rand:uniform(5), [ok, error, 'Ωmega', '', 'a b c']);
        6 -> rand:bytes(rand:uniform(300));
        7 -> <<(rand:bytes(3))/binary, 5:3>>;
        8 -> "a string";
        9 -> make_ref();
        10 -> pid();
        11 -> fun() -> ok end;
        12 -> fun lists:reverse/1;
        13 -> hd(erlang:ports());
        14 -> rand:bytes(70000);
        15 -> [];
        16 -> <<>>
    end.

%% ------------------------------------------------------------------
%% Encoder: the dist format of an OTP 25 sender
%% ------------------------------------------------------------------

%% Packets for Msgs in one channel, and for each packet whether it completes
%% a message. Mode: plain (header without references), cache (control
%% tuple atoms through the atom cache), fragments (cache plus messages cut
%% into fragments, two sequences interleaved).
encode_stream(Msgs, Mode) ->
    {Packets, _Cache} =
        lists:foldl(fun(Msg, {Acc, Cache0}) ->
                            {Header, Body, Cache} = encode(Msg, Mode, Cache0),
                            {[{Header, Body} | Acc], Cache}
                    end, {[], #{}}, Msgs),
    Whole = lists:reverse(Packets),
    case Mode of
        fragments -> fragment(Whole);
        _ -> {[iolist_to_binary([131, $D, H, B]) || {H, B} <- Whole], [true || _ <- Whole]}
    end.

body(T) ->
    <<131, B/binary>> = term_to_binary(T, [{minor_version, 2}]),
    B.

encode({Ctrl, Payload}, plain, Cache) ->
    {<<0>>, [body(Ctrl) | payload(Payload)], Cache};
encode({Ctrl, Payload}, _, Cache0) ->
    %% Atoms of the control tuple go through the cache: slot by hash, new
    %% entry unless the slot already holds the atom (as OTP's encoder does).
    Elems = tuple_to_list(Ctrl),
    {Refs, Cache, Enc} =
        lists:foldl(
          fun(E, {Rs, C, Es}) when is_atom(E) ->
                  Slot = erlang:phash2(E, 2048),
                  New = maps:get(Slot, C, undefined) =/= E,
                  Ix = length(Rs),
                  {Rs ++ [{Slot, New, E}], C#{Slot => E}, [<<82, Ix>> | Es]};
             (E, {Rs, C, Es}) ->
                  {Rs, C, [body(E) | Es]}
          end, {[], Cache0, []}, Elems),
    CtrlBin = [<<104, (tuple_size(Ctrl))>> | lists:reverse(Enc)],
    {header(Refs), [CtrlBin | payload(Payload)], Cache}.

payload(none) -> [];
payload(P) -> [body(P)].

%% NumberOfAtomCacheRefs, Flags (a nibble per reference, then one with the
%% long-atoms bit), references.
header([]) ->
    <<0>>;
header(Refs) ->
    N = length(Refs),
    Long = lists:any(fun({_, _, A}) -> byte_size(atom_to_binary(A)) > 255 end, Refs),
    Nibbles = [(case New of true -> 8; false -> 0 end) bor (Slot bsr 8)
               || {Slot, New, _} <- Refs] ++ [case Long of true -> 1; false -> 0 end],
    Flags = flag_bytes(Nibbles),
    RefBins = [case New of
                   true ->
                       T = atom_to_binary(A),
                       case Long of
                           true -> <<(Slot band 255), (byte_size(T)):16, T/binary>>;
                           false -> <<(Slot band 255), (byte_size(T)), T/binary>>
                       end;
                   false ->
                       <<(Slot band 255)>>
               end || {Slot, New, A} <- Refs],
    iolist_to_binary([N, Flags | RefBins]).

flag_bytes([Lo, Hi | Rest]) -> [(Hi bsl 4) bor Lo | flag_bytes(Rest)];
flag_bytes([Lo]) -> [Lo];
flag_bytes([]) -> [].

%% Cuts every message into 1..4 fragments and interleaves pairs of
%% sequences; the fragment header carries the message's header.
fragment(Whole) ->
    Seqs = [cut(Seq, H, iolist_to_binary(B))
            || {Seq, {H, B}} <- lists:zip(lists:seq(1, length(Whole)), Whole)],
    interleave(Seqs, [], []).

cut(Seq, Header, Body) ->
    K = min(rand:uniform(4), max(1, byte_size(Body))),
    Pieces = split(Body, K),
    [{<<131, $E, Seq:64, K:64, Header/binary, (hd(Pieces))/binary>>, K =:= 1} |
     [{<<131, $F, Seq:64, Id:64, P/binary>>, Id =:= 1}
      || {Id, P} <- lists:zip(lists:seq(K - 1, 1, -1), tl(Pieces))]].

split(Body, 1) ->
    [Body];
split(Body, K) ->
    At = rand:uniform(max(1, byte_size(Body) - K + 1)),
    <<A:At/binary, Rest/binary>> = Body,
    [A | split(Rest, K - 1)].

%% Two sequences at a time, fragments alternating; messages still complete
%% in order of their last fragments, which is the order checked.
interleave([A, B | Rest], Ps, Cs) ->
    {P, C} = lists:unzip(zip_alternate(A, B)),
    interleave(Rest, Ps ++ P, Cs ++ C);
interleave([A], Ps, Cs) ->
    {P, C} = lists:unzip(A),
    {Ps ++ P, Cs ++ C};
interleave([], Ps, Cs) ->
    {Ps, Cs}.

%% A's fragments with B's woven in; B's last fragment after A's last.
zip_alternate(A, B) ->
    {BInit, [BLast]} = lists:split(length(B) - 1, B),
    weave(A, BInit) ++ [BLast].

weave([X | Xs], [Y | Ys]) -> [X, Y | weave(Xs, Ys)];
weave(Xs, []) -> Xs;
weave([], Ys) -> Ys.
