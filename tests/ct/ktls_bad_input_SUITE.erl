%% Bad input against a ktls_filter node: each case gets the connection
%% closed within a bounded time with a log line naming the peer, while the
%% node and its other connections keep working, and 1,000 bad connections
%% leave no fd or memory growth behind.
-module(ktls_bad_input_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1]).
-export([malformed_dist_messages/1, too_many_fragment_sequences/1,
         hundreds_of_open_fragment_sequences/1]).
-export([random_bytes/1, truncated_handshake/1, oversized_handshake_packet/1,
         oversized_dist_frame/1, silent_peer/1, peer_stops_reading/1,
         thousand_bad_connections/1]).

suite() -> [{timetrap, {minutes, 4}}].

all() ->
    [random_bytes, truncated_handshake, oversized_handshake_packet, oversized_dist_frame,
     silent_peer, peer_stops_reading, thousand_bad_connections, malformed_dist_messages,
     too_many_fragment_sequences, hundreds_of_open_fragment_sequences].

init_per_suite(Config) ->
    Port = ktls_ct_nodes:free_port(),
    Log = filename:join(?config(priv_dir, Config), "a.log"),
    {A, NA} = ktls_ct_nodes:start(ktls_ct_nodes:unique("a"), ktls,
                                  ["-kernel", "inet_dist_listen_min", integer_to_list(Port),
                                   "-kernel", "inet_dist_listen_max", integer_to_list(Port),
                                   "-kernel", "net_ticktime", "4"]),
    ok = ktls_ct_nodes:call(A, logger, add_handler,
                            [ktls_test_log, logger_std_h,
                             #{config => #{file => Log}, level => notice}]),
    %% the same tick time on both ends: a would time b out otherwise
    {B, NB} = ktls_ct_nodes:start(ktls_ct_nodes:unique("b"), ktls,
                                  ["-kernel", "net_ticktime", "4"]),
    pong = ktls_ct_nodes:call(A, net_adm, ping, [NB]),
    [{a, A}, {na, NA}, {b, B}, {nb, NB}, {port, Port}, {log, Log} | Config].

end_per_suite(Config) ->
    ktls_ct_nodes:stop(?config(a, Config)),
    ktls_ct_nodes:stop(?config(b, Config)),
    ok.

%% ------------------------------------------------------------------

random_bytes(Config) ->
    S = connect(Config),
    ok = gen_tcp:send(S, crypto:strong_rand_bytes(3000)),
    closed_within(S, 5000),
    still_healthy(Config),
    logged(Config, "handshake").

truncated_handshake(Config) ->
    S = connect(Config),
    ok = gen_tcp:send(S, <<100:16, "only ten b">>),
    %% net_setuptime is 3 s on the test nodes
    closed_within(S, 8000),
    still_healthy(Config).

oversized_handshake_packet(Config) ->
    S = connect(Config),
    ok = gen_tcp:send(S, <<65535:16, 0:8000>>),
    closed_within(S, 5000),
    still_healthy(Config),
    logged(Config, "oversized").

oversized_dist_frame(Config) ->
    Fake = list_to_atom(ktls_ct_nodes:unique("fake") ++ "@127.0.0.1"),
    {ok, S} = ktls_fake_node:handshake(?config(port, Config), Fake, ktls_ct_nodes:cookie()),
    ok = gen_tcp:send(S, <<16#ffffffff:32>>),  % raw: packet 4 would prefix it
    closed_within(S, 5000),
    still_healthy(Config),
    logged(Config, "oversized").

%% After a real handshake, each malformed message closes that connection
%% with a log line naming the peer, the control message (when known) and
%% the byte offset; the node and its other connections keep running.
malformed_dist_messages(Config) ->
    A = ?config(a, Config),
    Errors0 = maps:get(errors, ktls_ct_nodes:call(A, ktls_filter, world_stats_get, [])),
    Pid = <<88, 119, 3, "a@b", 1:32, 0:32, 1:32>>,
    Cases =
        [{<<131, $D, 1, 16#00, 5>>, "reference to an empty atom cache slot at byte 4"},
         {<<131, $D, 0, 104, 4, 97, 6>>, "term count exceeds remaining bytes at byte 5"},
         {<<131, $D, 0, 104, 2, 97, 99, 106>>, "unknown control message at byte 3"},
         {<<131, $D, 0, 104, 3, 97, 1, Pid/binary, (binary_part(Pid, 0, 10))/binary>>,
          "truncated term at byte 31"},
         {<<131, $D, 0, 104, 4, 97, 6, Pid/binary, 106, 100, 0, 3, "rex">>,
          "reg_send: missing payload"},
         {<<131, $D, 0, 104, 3, 97, 2, 106, Pid/binary, 108, 255, 255, 255, 255, 97, 1>>,
          "send: term count exceeds remaining bytes"},
         {<<131, $D, 0, 104, 3, 97, 2, 106, Pid/binary, 109, 255, 255, 255, 0>>,
          "send: binary length exceeds remaining bytes"},
         {<<131, $F, 5:64, 1:64, 0>>, "fragment for an unknown sequence at byte 2"},
         {<<131, $Z>>, "unknown dist header type at byte 1"}],
    lists:foreach(
      fun({Packet, Why}) ->
              Fake = list_to_atom(ktls_ct_nodes:unique("fake") ++ "@127.0.0.1"),
              {ok, S} = ktls_fake_node:handshake(?config(port, Config), Fake,
                                                 ktls_ct_nodes:cookie()),
              ok = gen_tcp:send(S, Packet),
              closed_within(S, 5000),
              logged(Config, "dist filter: " ++ Why),
              logged(Config, atom_to_list(Fake))
      end, Cases),
    still_healthy(Config),
    W = ktls_ct_nodes:call(A, ktls_filter, world_stats_get, []),
    ?assertEqual(length(Cases), maps:get(errors, W) - Errors0),
    %% the counters say why
    ByReason = maps:get(errors_by_reason, W),
    ct:pal("errors_by_reason: ~p", [ByReason]),
    ?assertEqual(1, maps:get(<<"truncated term">>, ByReason)),
    ?assertEqual(1, maps:get(<<"fragment for an unknown sequence">>, ByReason)),
    ?assert(maps:get(<<"term count exceeds remaining bytes">>, ByReason) >= 2).

%% A peer that opens fragment sequences and never finishes them is cut off
%% at max_open_fragments (65536) instead of making the node hold them all.
too_many_fragment_sequences(Config) ->
    Fake = list_to_atom(ktls_ct_nodes:unique("fake") ++ "@127.0.0.1"),
    {ok, S} = ktls_fake_node:handshake(?config(port, Config), Fake, ktls_ct_nodes:cookie()),
    [ok = gen_tcp:send(S, <<131, $E, Seq:64, 2:64, 0, 104, 3, 97, 2>>)
     || Seq <- lists:seq(1, 65537)],
    closed_within(S, 5000),
    logged(Config, "dist filter: too many open fragment sequences"),
    still_healthy(Config).

%% OTP 25 sets no limit on the fragmented messages in flight on one
%% connection: each process of the peer in the middle of sending a message
%% over 64 KiB has its sequence open (distribution_SUITE:exit_dist_fragments
%% suspends a hundred such senders). 300 sequences open at once all reach
%% their receiver and the connection stays (it was closed at 64).
hundreds_of_open_fragment_sequences(Config) ->
    A = ?config(a, Config),
    Sink = ktls_ct_nodes:call(A, erlang, spawn, [fun() -> count_messages(0) end]),
    Fake = list_to_atom(ktls_ct_nodes:unique("fake") ++ "@127.0.0.1"),
    {ok, S} = ktls_fake_node:handshake(?config(port, Config), Fake, ktls_ct_nodes:cookie()),
    <<131, Ctl/binary>> = term_to_binary({2, '', Sink}),  % SEND
    Seqs = lists:seq(1, 300),
    Bodies = [begin
                  <<131, Msg/binary>> = term_to_binary({fragmented, Seq, binary:copy(<<Seq>>, 100000)}),
                  Body = <<Ctl/binary, Msg/binary>>,
                  split_binary(Body, byte_size(Body) div 2)
              end || Seq <- Seqs],
    [ok = gen_tcp:send(S, <<131, $E, Seq:64, 2:64, 0, First/binary>>)
     || {Seq, {First, _}} <- lists:zip(Seqs, Bodies)],
    [ok = gen_tcp:send(S, <<131, $F, Seq:64, 1:64, Last/binary>>)
     || {Seq, {_, Last}} <- lists:zip(Seqs, Bodies)],
    ok = ktls_ct_nodes:wait_until(
           fun() ->
                   300 =:= ktls_ct_nodes:call(A, erlang, apply,
                                              [fun() ->
                                                       Sink ! {count, self()},
                                                       receive {count, N} -> N end
                                               end, []])
           end, 5000),
    %% not closed (a tick from A may be waiting)
    ?assertNotMatch({error, closed}, gen_tcp:recv(S, 0, 100)),
    gen_tcp:close(S),
    still_healthy(Config).

count_messages(N) ->
    receive
        {fragmented, Seq, Bin} when byte_size(Bin) =:= 100000 ->
            true = binary:copy(<<Seq>>, 100000) =:= Bin,
            count_messages(N + 1);
        {count, From} ->
            From ! {count, N},
            count_messages(N)
    end.

silent_peer(Config) ->
    S = connect(Config),
    closed_within(S, 8000),
    still_healthy(Config).

peer_stops_reading(Config) ->
    Fake = list_to_atom(ktls_ct_nodes:unique("fake") ++ "@127.0.0.1"),
    {ok, S} = ktls_fake_node:handshake(?config(port, Config), Fake, ktls_ct_nodes:cookie()),
    ok = inet:setopts(S, [{recbuf, 4096}]),
    A = ?config(a, Config),
    %% The VM must see the connection as busy (+zdbbl semantics): a system
    %% monitor on A records busy_dist_port events.
    ok = ktls_ct_nodes:call(A, erlang, apply, [fun() ->
        P = spawn(fun() ->
                          erlang:system_monitor(self(), [busy_dist_port]),
                          Busy = receive {monitor, _, busy_dist_port, _} -> true
                                 after 10000 -> false
                                 end,
                          erlang:system_monitor(undefined),
                          receive {get, From} -> From ! {busy, Busy} end
                  end),
        true = register(ktls_ct_busy, P),
        ok
    end, []]),
    %% A floods the fake node, which never reads nor ticks: A must give up
    %% within net_ticktime (4 s) plus slack, without blocking anything else.
    ok = ktls_ct_nodes:call(A, erlang, apply, [fun() ->
        Bin = binary:copy(<<"z">>, 1024 * 1024),
        _ = spawn(fun() -> [erlang:send({nobody, Fake}, Bin, [noconnect]) || _ <- lists:seq(1, 64)] end),
        ok
    end, []]),
    still_healthy(Config),
    {busy, true} = ktls_ct_nodes:call(A, erlang, apply, [fun() ->
        ktls_ct_busy ! {get, self()},
        receive {busy, _} = R -> R after 15000 -> no_answer end
    end, []]),
    ok = ktls_ct_nodes:wait_until(
           fun() -> not lists:member(Fake, ktls_ct_nodes:call(A, erlang, nodes, [hidden])) andalso
                        not lists:member(Fake, ktls_ct_nodes:call(A, erlang, nodes, [])) end,
           15000),
    gen_tcp:close(S),
    still_healthy(Config).

thousand_bad_connections(Config) ->
    A = ?config(a, Config),
    timer:sleep(1000),
    Fds0 = ktls_ct_nodes:fd_count(A),
    Mem0 = ktls_ct_nodes:call(A, erlang, memory, [total]),
    Workers = 8,
    PerWorker = 125,
    Parent = self(),
    Pids = [spawn_link(fun() ->
                               [bad_connection(Config, I) || I <- lists:seq(1, PerWorker)],
                               Parent ! {done, self()}
                       end) || _ <- lists:seq(1, Workers)],
    [receive {done, P} -> ok after 120000 -> error(workers_timeout) end || P <- Pids],
    still_healthy(Config),
    ok = ktls_ct_nodes:wait_until(fun() -> ktls_ct_nodes:fd_count(A) =< Fds0 + 2 end, 20000),
    _ = ktls_ct_nodes:call(A, erlang, garbage_collect, []),
    Mem1 = ktls_ct_nodes:call(A, erlang, memory, [total]),
    ct:pal("fds ~p -> ~p, memory ~p -> ~p", [Fds0, ktls_ct_nodes:fd_count(A), Mem0, Mem1]),
    ?assert(Mem1 < Mem0 + 32 * 1024 * 1024),
    #{connections_open := Open} = ktls_ct_nodes:call(A, ktls_filter, carrier_stats, []),
    ?assertEqual(1, Open),  % only the connection to B
    ok.

bad_connection(Config, I) ->
    S = connect(Config),
    Payload = case I rem 3 of
                  0 -> crypto:strong_rand_bytes(64);
                  1 -> <<65535:16>>;
                  2 -> <<5:16, "N">>
              end,
    _ = gen_tcp:send(S, Payload),
    case I rem 3 of
        2 -> gen_tcp:close(S);  % truncated, then gone
        _ -> closed_within(S, 5000)
    end.

%% ------------------------------------------------------------------

connect(Config) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, ?config(port, Config),
                              [binary, {active, false}, {packet, raw}], 5000),
    S.

closed_within(S, Ms) ->
    Deadline = erlang:monotonic_time(millisecond) + Ms,
    drain_until_closed(S, Deadline).

drain_until_closed(S, Deadline) ->
    Left = Deadline - erlang:monotonic_time(millisecond),
    case Left > 0 of
        false -> ct:fail(not_closed_in_time);
        true ->
            case gen_tcp:recv(S, 0, Left) of
                {ok, _} -> drain_until_closed(S, Deadline);
                {error, closed} -> gen_tcp:close(S), ok;
                {error, econnreset} -> gen_tcp:close(S), ok;
                {error, timeout} -> ct:fail(not_closed_in_time)
            end
    end.

still_healthy(Config) ->
    A = ?config(a, Config),
    NB = ?config(nb, Config),
    NB = ktls_ct_nodes:call(A, erpc, call, [NB, erlang, node, []]),
    true = lists:member(NB, ktls_ct_nodes:call(A, erlang, nodes, [])),
    ok.

logged(Config, What) ->
    Log = ?config(log, Config),
    ok = ktls_ct_nodes:wait_until(
           fun() ->
                   case file:read_file(Log) of
                       {ok, Text} ->
                           binary:match(Text, list_to_binary(What)) =/= nomatch andalso
                               binary:match(Text, <<"127.0.0.1:">>) =/= nomatch;
                       _ -> false
                   end
           end, 5000).

