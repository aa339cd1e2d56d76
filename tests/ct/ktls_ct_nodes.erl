%% Helpers for multi-node suites: start OTP nodes on 127.0.0.1 with a given
%% carrier (controlled over stdio by OTP's peer module, so the test runner
%% itself is not on the dist path), and small remote-call helpers.
-module(ktls_ct_nodes).

-export([ebin/0, root/0, start/3, start/2, call/4, call/5, stop/1, track/1, stop_tracked/0,
         os_pid/1, fd_count/1,
         unique/1, cookie/0, wait_until/2, allow_mfa_args/1, free_port/0, remsh/3]).

-define(COOKIE, "ktls_ct_cookie").

-spec root() -> string().
root() ->
    case os:getenv("KTLS_ROOT") of
        false -> filename:dirname(filename:dirname(filename:dirname(code:which(?MODULE))));
        R -> R
    end.

-spec ebin() -> string().
ebin() ->
    filename:join([root(), "_build", "lib", "ktls_filter", "ebin"]).

-spec cookie() -> atom().
cookie() -> list_to_atom(?COOKIE).

-spec unique(string()) -> string().
unique(Prefix) ->
    Prefix ++ "_" ++ integer_to_list(erlang:unique_integer([positive])).

%% Carrier: ktls | inet_tcp | inet_tls | epmdless (ktls with ktls_filter_epmd).
-spec start(string(), atom()) -> {pid(), node()}.
start(Name, Carrier) ->
    start(Name, Carrier, []).

-spec start(string(), atom(), [string()]) -> {pid(), node()}.
start(Name, Carrier, Extra) ->
    %% The suites' funs run on the nodes, so their modules must load there.
    TestDir = filename:dirname(code:which(?MODULE)),
    Args = ["-setcookie", ?COOKIE, "-pa", ebin(), "-pa", TestDir, "-kernel", "net_setuptime", "3",
            "-connect_all", "false" | carrier_args(Carrier)] ++ Extra,
    %% Not linked: suites start nodes in init_per_suite, whose process ends.
    %% KTLS_ERL / KTLS_ERL_EXTRA: run the nodes on another runtime (the
    %% patched one of patches/) with extra emulator flags.
    Exec = case os:getenv("KTLS_ERL") of
               false -> #{};
               Erl -> #{exec => Erl}
           end,
    ExtraVm = string:lexemes(os:getenv("KTLS_ERL_EXTRA", ""), " "),
    {ok, Peer, Node} = peer:start(Exec#{name => Name, host => "127.0.0.1",
                                        longnames => true, connection => standard_io,
                                        args => ExtraVm ++ Args, wait_boot => 30000}),
    {Peer, Node}.

carrier_args(ktls) -> ["-proto_dist", "ktls_filter"];
carrier_args(inet_tcp) -> ["-proto_dist", "inet_tcp"];
carrier_args(inet_tls) -> ["-proto_dist", "inet_tls"];
carrier_args(epmdless) ->
    ["-proto_dist", "ktls_filter", "-epmd_module", "ktls_filter_epmd", "-start_epmd", "false"].

%% Command-line arguments that add MFAs to the filter's allow list.
-spec allow_mfa_args([{module(), atom(), arity() | '_'}]) -> [string()].
allow_mfa_args(Mfas) ->
    ["-ktls_filter", "allow_mfa", lists:flatten(io_lib:format("~w", [Mfas]))].

-spec call(pid(), module(), atom(), list()) -> term().
call(Peer, M, F, A) ->
    call(Peer, M, F, A, 60000).

-spec call(pid(), module(), atom(), list(), timeout()) -> term().
call(Peer, M, F, A, Timeout) ->
    peer:call(Peer, M, F, A, Timeout).

-spec stop(pid()) -> ok.
stop(Peer) ->
    catch peer:stop(Peer),
    ok.

%% @doc Remembers Peer (in the calling process) for stop_tracked/0.
-spec track(pid()) -> ok.
track(Peer) ->
    put({?MODULE, peers}, [Peer | get_tracked()]),
    ok.

%% @doc Stops every peer track/1 remembered in this process (end_per_testcase).
-spec stop_tracked() -> ok.
stop_tracked() ->
    [stop(P) || P <- get_tracked()],
    erase({?MODULE, peers}),
    ok.

get_tracked() ->
    case get({?MODULE, peers}) of
        undefined -> [];
        L -> L
    end.

-spec os_pid(pid()) -> string().
os_pid(Peer) ->
    call(Peer, os, getpid, []).

-spec fd_count(pid()) -> non_neg_integer().
fd_count(Peer) ->
    {ok, Fds} = call(Peer, file, list_dir, ["/proc/self/fd"]),
    length(Fds).

%% Polls Fun until it returns true, every 50 ms, at most Ms.
-spec wait_until(fun(() -> boolean()), non_neg_integer()) -> ok | timeout.
wait_until(Fun, Ms) when Ms =< 0 ->
    case Fun() of
        true -> ok;
        false -> timeout
    end;
wait_until(Fun, Ms) ->
    case Fun() of
        true -> ok;
        false ->
            timer:sleep(50),
            wait_until(Fun, Ms - 50)
    end.

%% A TCP port on 127.0.0.1 that was free a moment ago.
-spec free_port() -> inet:port_number().
free_port() ->
    {ok, S} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(S),
    ok = gen_tcp:close(S),
    Port.

%% Runs `./ktls remsh Node --port Port --cookie C Extra' on a terminal
%% (OTP 25 runs -remsh only on one: script(1) gives it one), prints the
%% target's node name and persistent_term ktls_remsh_marker, and leaves the
%% shell with ^G q (q() would stop the target node). Returns the output.
-spec remsh(node(), inet:port_number(), string()) -> string().
remsh(Node, Port, Extra) ->
    Cmd = lists:flatten(io_lib:format(
            "(sleep 5; printf 'io:format(\"MARK:~~p:~~p~~n\", "
            "[node(), persistent_term:get(ktls_remsh_marker)]).\\r'; sleep 3; "
            "printf '\\007'; sleep 1; printf 'q\\r'; sleep 2) | "
            "KTLS_ROOT=~s timeout 30 script -qfc '~s remsh ~s --port ~w --cookie ~s ~s' "
            "/dev/null 2>&1",
            [root(), filename:join(root(), "ktls"), Node, Port, cookie(), Extra])),
    os:cmd(Cmd).
