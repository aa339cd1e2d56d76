%% Records real distribution traffic between two stock OTP 25 nodes for the
%% filter's C++ tests (nif/filter/testdata/, see its README).
%%
%% Per scenario: node B (-proto_dist inet_tcp) listens on a port of its own;
%% node A (-dist_listen false, hidden) is told by -erl_epmd_port that every
%% node listens on the recorder's port. The recorder is a TCP proxy between
%% them: it forwards every byte unchanged and cuts each direction into
%% packets (2-byte framing during the handshake, 4-byte after it). Then A
%% runs the scenario's traffic (traffic/2 below, on A) against B. Both nodes
%% are started over stdio with OTP's peer module, so the recorder itself is
%% not on the dist path and the nodes are plain `erl` of the system OTP.
%%
%% Output per scenario, in the format of nif/filter/testdata/README.md:
%%   NAME.a2b.dist  the packets A sent (what B's filter would inspect)
%%   NAME.b2a.dist  the packets B sent back
%% Ticks (empty packets) and handshake packets are not recorded.
-module(ktls_capture).

-behaviour(gen_server).

-export([main/1, traffic/2, setup/0, call_back/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(COOKIE, "ktls_capture_cookie").
-define(ECHO, ktls_capture_echo).
-define(SINK, ktls_capture_sink).

scenarios() ->
    [ping, gen_server, erpc, signals, terms, atom_cache, fragments, seq_trace,
     attack_erpc_halt, attack_rex_cast, attack_kernel_sup, attack_io_request].

%% ------------------------------------------------------------------
%% Driver (the recorder, not distributed)
%% ------------------------------------------------------------------

-spec main([string()]) -> no_return().
main([OutDir | Only]) ->
    Wanted = case Only of
                 [] -> scenarios();
                 _ -> [list_to_atom(S) || S <- Only]
             end,
    ok = filelib:ensure_dir(filename:join(OutDir, "x")),
    Results = [{S, catch record(S, OutDir)} || S <- Wanted],
    Bad = [R || {_, Res} = R <- Results, Res =/= ok],
    [io:format("~p: ~p~n", [S, R]) || {S, R} <- Results],
    halt(case Bad of [] -> 0; _ -> 1 end).

record(Scenario, OutDir) ->
    {ok, L} = gen_tcp:listen(0, [binary, {active, false}, {ip, {127, 0, 0, 1}}]),
    {ok, ProxyPort} = inet:port(L),
    BPort = free_port(),
    Tag = integer_to_list(erlang:unique_integer([positive])),
    {PeerB, B} = start_node("b" ++ Tag, ["-erl_epmd_port", integer_to_list(BPort)]),
    ok = peer:call(PeerB, ?MODULE, setup, []),
    Recorder = self(),
    spawn_link(fun() -> proxy(L, BPort, Recorder) end),
    {PeerA, _A} = start_node("a" ++ Tag, ["-dist_listen", "false",
                                          "-erl_epmd_port", integer_to_list(ProxyPort)
                                          | node_args(Scenario)]),
    ok = peer:call(PeerA, ?MODULE, setup, []),
    Result = peer:call(PeerA, ?MODULE, traffic, [Scenario, B], 120000),
    timer:sleep(500),  % in-flight replies, exits of short-lived processes
    catch peer:stop(PeerA),
    {A2B, B2A} = receive {recorded, X, Y} -> {X, Y} after 10000 -> error(no_recording) end,
    catch peer:stop(PeerB),
    gen_tcp:close(L),
    ok = write(filename:join(OutDir, atom_to_list(Scenario) ++ ".a2b.dist"), A2B),
    ok = write(filename:join(OutDir, atom_to_list(Scenario) ++ ".b2a.dist"), B2A),
    io:format("~p: ~p, ~b packets a2b (~b bytes), ~b packets b2a (~b bytes)~n",
              [Scenario, Result, length(A2B), iolist_size(A2B), length(B2A), iolist_size(B2A)]),
    ok.

%% Busy dist port limit of 64 KiB: fragments of concurrent senders interleave.
node_args(fragments) -> ["+zdbbl", "64"];
node_args(_) -> [].

write(File, Packets) ->
    file:write_file(File, [[<<(byte_size(P)):32>>, P] || P <- Packets]).

free_port() ->
    {ok, S} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, P} = inet:port(S),
    gen_tcp:close(S),
    P.

start_node(Name, Extra) ->
    Dir = filename:dirname(code:which(?MODULE)),
    Args = ["-setcookie", ?COOKIE, "-proto_dist", "inet_tcp", "-start_epmd", "false",
            "-connect_all", "false", "-pa", Dir | Extra],
    {ok, Peer, Node} = peer:start(#{name => Name, host => "127.0.0.1", longnames => true,
                                    connection => standard_io, args => Args,
                                    wait_boot => 30000}),
    {Peer, Node}.

%% One connection A -> proxy -> B; each direction pumped by its own process.
proxy(L, BPort, Recorder) ->
    {ok, SA} = gen_tcp:accept(L, 30000),
    {ok, SB} = gen_tcp:connect({127, 0, 0, 1}, BPort, [binary, {active, false}]),
    Self = self(),
    PA = spawn_link(fun() -> pump(SA, SB, $r, Self) end),  % A's last handshake packet: reply
    PB = spawn_link(fun() -> pump(SB, SA, $a, Self) end),  % B's: ack
    A2B = receive {PA, Ps1} -> Ps1 end,
    B2A = receive {PB, Ps2} -> Ps2 end,
    Recorder ! {recorded, A2B, B2A}.

pump(From, To, LastHandshake, Owner) ->
    Packets = pump(From, To, {handshake, LastHandshake}, <<>>, []),
    Owner ! {self(), lists:reverse(Packets)}.

pump(From, To, State, Buf, Acc) ->
    case gen_tcp:recv(From, 0) of
        {ok, Data} ->
            _ = gen_tcp:send(To, Data),
            {State1, Rest, Acc1} = cut(State, <<Buf/binary, Data/binary>>, Acc),
            pump(From, To, State1, Rest, Acc1);
        {error, _} ->
            _ = gen_tcp:shutdown(To, write),
            Acc
    end.

cut({handshake, Last} = S, <<Len:16, P:Len/binary, Rest/binary>>, Acc) ->
    case P of
        <<Last, _/binary>> -> cut(dist, Rest, Acc);
        _ -> cut(S, Rest, Acc)
    end;
cut(dist, <<0:32, Rest/binary>>, Acc) ->
    cut(dist, Rest, Acc);  % tick
cut(dist, <<Len:32, P:Len/binary, Rest/binary>>, Acc) ->
    cut(dist, Rest, [P | Acc]);
cut(S, Buf, Acc) ->
    {S, Buf, Acc}.

%% ------------------------------------------------------------------
%% On both nodes: an echo server and a sink
%% ------------------------------------------------------------------

-spec setup() -> ok.
setup() ->
    {ok, _} = gen_server:start({local, ?ECHO}, ?MODULE, [], []),
    Sink = spawn(fun Loop() -> receive _ -> Loop() end end),
    true = register(?SINK, Sink),
    ok.

init([]) -> {ok, #{}}.

handle_call({echo, T}, _From, S) -> {reply, {echo, T}, S};
handle_call(_, _From, S) -> {reply, ok, S}.

handle_cast(_, S) -> {noreply, S}.

handle_info(_, S) -> {noreply, S}.

%% On B, called by A through erpc: B calls A's echo server, so A answers
%% with a send to B's alias (ALIAS_SEND).
-spec call_back(node()) -> term().
call_back(A) ->
    gen_server:call({?ECHO, A}, {echo, from_b}).

%% ------------------------------------------------------------------
%% Traffic, run on A against B
%% ------------------------------------------------------------------

-spec traffic(atom(), node()) -> term().
traffic(Scenario, B) ->
    pong = net_adm:ping(B),
    run(Scenario, B).

run(ping, B) ->
    pong = net_adm:ping(B);
run(gen_server, B) ->
    Echo = {?ECHO, B},
    {echo, hello} = gen_server:call(Echo, {echo, hello}),
    ok = gen_server:cast(Echo, {note, 1}),
    Echo ! plain_info,
    {echo, from_b} = erpc:call(B, ?MODULE, call_back, [node()]),
    ok;
run(erpc, B) ->
    B = erpc:call(B, erlang, node, []),
    [3, 2, 1] = erpc:call(B, lists, reverse, [[1, 2, 3]]),
    ok = erpc:cast(B, erlang, garbage_collect, []),
    _ = rpc:call(B, erlang, system_time, []),
    true = rpc:cast(B, erlang, node, []),
    Req = erpc:send_request(B, erlang, node, []),
    B = erpc:receive_response(Req, 5000),
    {_, []} = rpc:multicall([B], erlang, node, []),
    ok;
run(signals, B) ->
    process_flag(trap_exit, true),
    Pid = spawn(B, fun() -> receive stop -> ok end end),
    Ref = monitor(process, Pid),
    true = link(Pid),
    true = unlink(Pid),
    true = demonitor(Ref),
    NameRef = monitor(process, {?ECHO, B}),
    true = demonitor(NameRef, [flush]),
    Pid ! stop,
    {P2, R2} = spawn_monitor(B, fun() -> exit(done) end),
    receive {'DOWN', R2, process, P2, done} -> ok after 5000 -> error(no_down) end,
    P3 = spawn_link(B, fun() -> receive _ -> ok end end),
    true = exit(P3, kill),
    receive {'EXIT', P3, killed} -> ok after 5000 -> error(no_exit) end,
    P4 = spawn_link(B, fun() -> receive _ -> ok end end),
    true = exit(P4, {shutdown, with_payload}),
    receive {'EXIT', P4, {shutdown, with_payload}} -> ok after 5000 -> error(no_exit) end,
    P5 = spawn(B, fun() -> receive _ -> ok end end),
    true = group_leader(self(), P5),
    P5 ! stop,
    ReqId = spawn_request(B, timer, sleep, [10], [monitor, link]),
    receive {spawn_reply, ReqId, ok, P6} ->
            receive {'DOWN', ReqId, process, P6, normal} -> ok after 5000 -> error(no_down) end
    after 5000 -> error(no_spawn_reply)
    end,
    ok;
run(terms, B) ->
    Sink = {?SINK, B},
    [Sink ! {Name, T} || {Name, T} <- sample_terms(B)],
    ok;
run(atom_cache, B) ->
    %% More atoms than cache slots, each sent more than once: slots get
    %% written, reused and overwritten.
    Atoms = [list_to_atom("capture_atom_" ++ integer_to_list(I)) || I <- lists:seq(1, 3000)],
    Sink = {?SINK, B},
    [Sink ! {atoms, lists:sublist(Atoms, I, 60)} || I <- lists:seq(1, 3000, 60)],
    [Sink ! {atoms, lists:sublist(Atoms, I, 60)} || I <- lists:seq(1, 600, 60)],
    [Sink ! {control_atom_in_name, A} || A <- lists:sublist(Atoms, 10)],
    ok;
run(fragments, B) ->
    Sink = {?SINK, B},
    %% Under and over the fragment size, then two senders at once.
    Sink ! {under, binary:copy(<<"u">>, 60000)},
    Sink ! {over, binary:copy(<<"o">>, 100000)},
    Sink ! {list_over, lists:seq(1, 20000)},
    %% Several senders at once; A runs with a small +zdbbl, so a sender is
    %% suspended between its fragments and the others' fragments go out
    %% in between (interleaved sequences on the wire).
    Self = self(),
    Go = make_ref(),
    Senders = [spawn_link(fun() ->
                                  receive Go -> ok end,
                                  Sink ! {concurrent, N, binary:copy(<<N>>, 150000)},
                                  Self ! {done, N}
                          end) || N <- [1, 2, 3, 4]],
    [S ! Go || S <- Senders],
    [receive {done, N} -> ok after 10000 -> error(timeout) end || N <- [1, 2, 3, 4]],
    length(Senders);
run(seq_trace, B) ->
    _ = seq_trace:set_token(label, 17),
    {?SINK, B} ! traced_reg_send,
    Pid = erpc:call(B, erlang, whereis, [?SINK]),
    Pid ! traced_send,
    _ = seq_trace:set_token([]),
    ok;
run(attack_erpc_halt, B) ->
    %% B really halts: the connection ends after the spawn request.
    catch erpc:call(B, erlang, halt, [], 2000);
run(attack_rex_cast, B) ->
    ok = gen_server:cast({rex, B}, {cast, os, putenv, ["KTLS_CAPTURE", "1"], group_leader()}),
    %% The same atoms again: this message's header refers to the cache
    %% slots the dropped cast wrote.
    {?SINK, B} ! {'$gen_cast', {cast, os, putenv}},
    ok;
run(attack_kernel_sup, B) ->
    Spec = #{id => ktls_capture_child, start => {os, getpid, []}},
    catch supervisor:start_child({kernel_sup, B}, Spec);
run(attack_io_request, B) ->
    Req = {io_request, self(), make_ref(), {put_chars, unicode, os, getpid, []}},
    {user, B} ! Req,
    Ok = {io_request, self(), make_ref(), {put_chars, unicode, io_lib, format, ["~p~n", [ok]]}},
    {user, B} ! Ok,
    ok.

%% One message per term kind, {Name, Term}; names are what the C++ tests
%% look up (nif/filter/etf_test.cc).
sample_terms(B) ->
    Remote = erpc:call(B, erlang, whereis, [?SINK]),
    X = erlang:unique_integer(),
    [{small_integer, 42},
     {integer, -123456},
     {integer_max, 1 bsl 30},
     {small_big, 1 bsl 100},
     {small_big_negative, -(1 bsl 70)},
     {large_big, 1 bsl 3000},
     {new_float, 3.14159},
     {float_tiny, -1.0e-300},
     {atom_utf8, 'Ωmega_ünïcode'},
     {long_atom, list_to_atom(lists:duplicate(255, $Ω))},
     {empty_atom, ''},
     {nil, []},
     {string, "a string"},
     {list, [1, 2, 300, -1, atom]},
     {improper_list, [a | b]},
     {small_tuple, {a, 1, "x"}},
     {large_tuple, list_to_tuple(lists:seq(1, 300))},
     {empty_tuple, {}},
     {small_map, #{a => 1, <<"b">> => [2]}},
     {large_map, maps:from_list([{I, I * I} || I <- lists:seq(1, 40)])},
     {binary, <<1, 2, 3, 4, 5>>},
     {empty_binary, <<>>},
     {bit_binary, <<5:3>>},
     {sub_binary, binary_part(binary:copy(<<"abcdef">>, 10), 3, 7)},
     {local_pid, self()},
     {remote_pid, Remote},
     {reference, make_ref()},
     {port, hd(erlang:ports())},
     {local_fun, fun() -> ok end},
     {closure, fun(Y) -> {X, Y} end},
     {export_fun, fun lists:reverse/1},
     {nested, [[[[{[]}]]]]},
     %% A message refers to at most 255 cache entries; atoms beyond go as
     %% plain SMALL_ATOM_UTF8 / ATOM_UTF8 (the long one, 510 bytes).
     {atoms_beyond_cache,
      [list_to_atom("beyond_" ++ integer_to_list(I)) || I <- lists:seq(1, 300)]
      ++ [list_to_atom(lists:duplicate(255, $é))]}].
