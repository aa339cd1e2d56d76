%% @doc Configuration of ktls_filter: one table of options with their types
%% and documented defaults, read from the application environment of
%% `ktls_filter' (e.g. `-ktls_filter max_dist_packet 1048576') and from
%% `-ktls_filter_optfile FILE'. The most specific source wins: a
%% `-ktls_filter Key Value' flag on the command line over the optfile, the
%% optfile over the rest of the application environment (sys.config). An
%% unknown or ill-typed option is an error that names it.
%%
%% TLS: the optfile may hold OTP's `-ssl_dist_optfile' format,
%% `[{server, SslOpts}, {client, SslOpts}]', next to ktls_filter's own
%% `{Key, Value}' terms; `-ssl_dist_optfile FILE' and `-ssl_dist_opt ...'
%% given with `-proto_dist ktls_filter' are read the same way, so that
%% inet_tls_dist command lines work unchanged (ktls_filter_tls checks the
%% ssl options). With TLS options the node speaks TLS; without, plain TCP.
%%
%% Files are read with prim_file: distribution starts at boot before
%% kernel's file server.
-module(ktls_filter_config).

-export([load/0, get/0, get/1, set/2, runtime_options/0, options/0, validate/1, describe/0, filter_options/1,
         carrier_options/1, consult/1, peer_arguments/0]).

-type key() :: atom().
-type config() :: #{key() => term()}.
-export_type([config/0]).

-define(PT_KEY, {?MODULE, config}).

%% {Key, Type, Default, Doc}
-spec options() -> [{key(), term(), term(), string()}].
options() ->
    [{listen_ip, ip, {0, 0, 0, 0},
      "address the dist listener binds to"},
     {listen_port, port, 0,
      "dist listen port; 0 = ask the epmd module / inet_dist_listen_min..max"},
     {backlog, pos_integer, 128, "listen backlog"},
     {connect_timeout, pos_integer, 7000, "TCP connect timeout, ms"},
     {nodelay, boolean, true, "TCP_NODELAY on dist sockets"},
     {max_handshake_packet, pos_integer, 8192,
      "largest handshake packet accepted, bytes"},
     {max_dist_packet, pos_integer, 64 * 1024 * 1024,
      "largest dist packet (frame) accepted, bytes; larger closes the connection"},
     {send_high_watermark, pos_integer, 4 * 1024 * 1024,
      "queued outbound bytes above which the connection is busy"},
     {send_low_watermark, pos_integer, 1024 * 1024,
      "queued outbound bytes below which a busy connection resumes"},
     {rx_window, pos_integer, 8 * 1024 * 1024,
      "bytes delivered to the VM but not yet consumed before reading pauses"},
     {buffer_size, pos_integer, 256 * 1024, "receive buffer size, bytes"},
     {pool_max_bytes, pos_integer, 4096 * 1024 * 1024,
      "buffer pool limit, bytes (backpressure above)"},
     {thp, boolean, true, "advise buffer arenas for transparent huge pages"},
     {zero_copy_rx, boolean, true,
      "hand receive buffers to the VM without copying when the runtime allows it "
      "(patches/0002); false = always copy"},
     {ring_entries, pos_integer, 1024, "io_uring submission queue size"},
     {rx_reader, {oneof, [port, ring]}, port,
      "who reads a connection once its handshake is done: port = a port of the "
      "ktls_filter_nif driver, woken by the VM's own pollset on a scheduler (one "
      "thread wake-up per message instead of two); ring = the carrier's io_uring thread"},
     {ring_spin_us, non_neg_integer, 0,
      "microseconds the carrier thread polls for completions before sleeping (0 = never); "
      "lowers request/response latency where cores are to spare"},
     {peers, peers, #{},
      "epmd-less name table: #{'name@host' => {HostOrIp, Port}} for ktls_filter_epmd"},
     {deep_packet_inspection, boolean, true,
      "inspect every inbound dist message (false = break glass: pass everything)"},
     {filter_mode, {oneof, [enforce, monitor, off]}, enforce,
      "enforce: drop by policy; monitor: count and log only (size limits too); off: no decoding"},
     {max_message_size, pos_integer, 128 * 1024 * 1024,
      "largest inbound dist message (after fragment reassembly), bytes"},
     {max_reassembly_bytes, pos_integer, 256 * 1024 * 1024,
      "fragment reassembly memory per connection, bytes"},
     {max_open_fragments, pos_integer, 65536,
      "fragmented sequences open at once per connection (one per peer process in the "
      "middle of sending a message over 64 KiB; their memory counts in max_reassembly_bytes)"},
     {allow_mfa, mfa_list, [],
      "extra {M, F, Arity} (or {M, '_', '_'}) allowed through spawn_request/erpc/rpc"},
     {allow_reg_names, atom_list, [],
      "extra registered names that may receive unsafe-looking messages"},
     {system_applications, atom_list, [],
      "applications whose processes are protected like OTP's own (on top of OTP's "
      "applications and ktls_filter): remote nodes may only send them replies"},
     {unprotected_applications, atom_list, [],
      "OTP applications whose processes get the rules of application processes "
      "(e.g. [mnesia] for a mnesia cluster, whose processes talk between nodes)"},
     {max_new_atoms_per_connection, non_neg_integer, 100000,
      "atoms the node does not have yet that one connection may bring; messages that "
      "would bring more are dropped"},
     {max_new_atoms, non_neg_integer, 500000,
      "atoms the node does not have yet that all connections together may bring"},
     {max_global_message_size, pos_integer, 1024 * 1024,
      "largest message to global's processes (names are stored on every node), bytes"},
     {ktls, {oneof, [auto, required, off]}, auto,
      "TLS record layer in the kernel (kTLS): auto = where the kernel can, else OpenSSL in "
      "user space (counted, reason in carrier_stats); required = refuse connections the "
      "kernel cannot take; off = always user space"},
     {tls_handshake_timeout, pos_integer, 7000,
      "TLS handshake time limit, ms; a peer that stalls longer is closed"},
     {verify_node_name, boolean, false,
      "TLS: the peer's certificate must name the host part of its node name (DNS or IP "
      "subjectAltName, else CN), checked before the dist handshake goes on"},
     {trusted_peers, trust_rules, [],
      "peers that may do what the default policy refuses (remote shells, observer, rpc): "
      "[{cert_issuer, PemFile} | {cert_subject, Glob} | {node, Glob} | {all, [Rule]}]; "
      "decided per connection after the handshake (see ktls_filter_trust); without TLS "
      "the cookie is the only secret, so {node, Glob} is a convenience only"},
     {handler, module_or_undefined, undefined,
      "ktls_filter_handler module consulted for unsafe messages"},
     {logger_capacity, non_neg_integer, 1000,
      "logger event queue capacity; 0 = unbounded"}].

%% @doc Reads the optfiles and the application environment, validates, stores.
-spec load() -> {ok, config()} | {error, string()}.
load() ->
    try
        AppEnv = app_env(),
        {FileOpts, TlsSources} = read_optfiles(),
        Config0 = port_argument(ok(validate(AppEnv ++ FileOpts ++ command_line(AppEnv)))),
        _ = peer_arguments(),
        check_epmd_module(Config0),
        Sides = tls_sides(TlsSources),
        Config = Config0#{tls => ktls_filter_tls:carrier_tls(Sides, Config0),
                          tls_source => tls_source(TlsSources)},
        persistent_term:put(?PT_KEY, Config),
        {ok, Config}
    catch
        throw:{config, Msg} -> {error, Msg}
    end.

ok({ok, V}) -> V;
ok({error, Msg}) -> throw({config, Msg}).

fail(Fmt, Args) ->
    throw({config, lists:flatten(io_lib:format(Fmt, Args))}).

%% The application environment, with `-ktls_filter Key Value' from the
%% command line in it. OTP reads those loosely: a key without a value is
%% dropped, and a value that is not an Erlang term makes the application
%% unloadable, which would lose every option. Both stop the start here.
app_env() ->
    check_app_flags(init:get_arguments()),
    case application:load(ktls_filter) of
        ok -> ok;
        {error, {already_loaded, _}} -> ok;
        {error, {bad_environment_value, Text}} ->
            Keys = [K || {ktls_filter, Words} <- init:get_arguments(),
                         [K, V] <- pairs(Words), V =:= Text],
            fail("-ktls_filter ~ts ~ts: ~ts is not an Erlang term (write strings in double "
                 "quotes: -ktls_filter ~ts '\"~ts\"', tuples as '{...}')",
                 [case Keys of [K | _] -> K; [] -> "..." end, Text, Text,
                  case Keys of [K | _] -> K; [] -> "Key" end, Text]);
        {error, Why} ->
            fail("the ktls_filter application cannot be loaded: ~tp", [Why])
    end,
    [{K, V} || {K, V} <- application:get_all_env(ktls_filter), K =/= included_applications].

%% The options given as -ktls_filter Key Value flags, with the values OTP
%% parsed into the application environment (a flag there overrides
%% sys.config), so that they also win over the optfile.
command_line(AppEnv) ->
    Keys = [K || {ktls_filter, Words} <- init:get_arguments(), [K, _] <- pairs(Words)],
    [{K, V} || {K, V} <- AppEnv, lists:member(atom_to_list(K), Keys)].

%% Every -ktls_filter flag is Key Value pairs. erl starts a new flag at each
%% word that begins with '-', so `-ktls_filter buffer_size -5' leaves the
%% key alone and makes `-5' a flag of its own.
check_app_flags([{ktls_filter, Words} | Rest]) when length(Words) rem 2 =:= 1 ->
    Key = lists:last(Words),
    case Rest of
        [{Next, _} | _] ->
            fail("-ktls_filter ~ts: no value (erl read the next word, -~ts, as a flag of its "
                 "own; a value that starts with '-' goes in -ktls_filter_optfile)", [Key, Next]);
        [] ->
            fail("-ktls_filter ~ts: no value (expected -ktls_filter Key Value)", [Key])
    end;
check_app_flags([{ktls_filter, []} | _]) ->
    fail("-ktls_filter without a key and value (expected -ktls_filter Key Value)", []);
check_app_flags([_ | Rest]) ->
    check_app_flags(Rest);
check_app_flags([]) ->
    ok.

pairs([K, V | T]) -> [[K, V] | pairs(T)];
pairs(_) -> [].

%% -ktls_filter_port P: the listen port, whatever the epmd module (with
%% ktls_filter_epmd it is also what the node answers for itself). The same
%% as the listen_port option; both given must agree.
port_argument(Config) ->
    case init:get_argument(ktls_filter_port) of
        error ->
            Config;
        {ok, [[P]]} ->
            Port = case string:to_integer(P) of
                       {N, ""} when N >= 0, N =< 65535 -> N;
                       _ -> fail("-ktls_filter_port ~ts: not a port number 0..65535", [P])
                   end,
            case maps:get(listen_port, Config) of
                Same when Same =:= 0; Same =:= Port ->
                    Config#{listen_port => Port};
                Other ->
                    fail("-ktls_filter_port ~w and the listen_port option ~w disagree: give "
                         "one of them", [Port, Other])
            end;
        {ok, Lists} ->
            fail("-ktls_filter_port ~ts: expected one port, given once",
                 [lists:join(" -ktls_filter_port ", [lists:join(" ", L) || L <- Lists])])
    end.

%% @doc The `-ktls_filter_peer NAME@HOST PORT' arguments as a peers table
%% (checked at start: load/0 refuses ill-formed ones).
-spec peer_arguments() -> #{node() => {string(), inet:port_number()}}.
peer_arguments() ->
    Args = case init:get_argument(ktls_filter_peer) of
               {ok, L} -> L;
               error -> []
           end,
    maps:from_list([peer_argument(A) || A <- Args]).

peer_argument([Node, P]) ->
    Host = case string:split(Node, "@") of
               [[_ | _], [_ | _] = H] -> H;
               _ -> fail("-ktls_filter_peer ~ts ~ts: ~ts is not a node name NAME@HOST",
                         [Node, P, Node])
           end,
    case string:to_integer(P) of
        {Port, ""} when Port > 0, Port =< 65535 -> {list_to_atom(Node), {Host, Port}};
        _ -> fail("-ktls_filter_peer ~ts ~ts: ~ts is not a port number 1..65535",
                  [Node, P, P])
    end;
peer_argument(Words) ->
    fail("-ktls_filter_peer ~ts: expected -ktls_filter_peer NAME@HOST PORT",
         [lists:join(" ", Words)]).

%% The peers table is read by ktls_filter_epmd only: given to a node that
%% finds other nodes some other way it would do nothing.
check_epmd_module(Config) ->
    Epmd = net_kernel:epmd_module(),
    Given = [F || {F, true} <- [{"-ktls_filter_peer",
                                 init:get_argument(ktls_filter_peer) =/= error},
                                {"the peers option", maps:get(peers, Config) =/= #{}}]],
    case Given =/= [] andalso Epmd =/= ktls_filter_epmd of
        true ->
            fail("~ts: read by -epmd_module ktls_filter_epmd only, and this node's epmd module "
                 "is ~s (add -epmd_module ktls_filter_epmd -start_epmd false)",
                 [lists:join(" and ", Given), Epmd]);
        false ->
            ok
    end.

%% Each source gives both sides or none; two sources are an error (which
%% one was meant?).
tls_sides([]) ->
    undefined;
tls_sides([{Source, Sides}]) ->
    maps:from_list(
      [case maps:find(Side, Sides) of
           {ok, Opts} -> {Side, ok(ktls_filter_tls:side({Side, Source}, Opts))};
           error -> throw({config, lists:flatten(io_lib:format(
                                      "TLS options (~ts): no {~s, SslOptions}: give both "
                                      "server and client", [Source, Side]))})
       end || Side <- [server, client]]);
tls_sides(Many) ->
    throw({config, lists:flatten(io_lib:format("TLS options are given more than once (~ts): "
                                               "keep one", [lists:join(", ", [S || {S, _} <- Many])]))}).

tls_source([]) -> undefined;
tls_source([{Source, _} | _]) -> unicode:characters_to_binary(Source).

%% Options and TLS sides from -ktls_filter_optfile, -ssl_dist_optfile and
%% -ssl_dist_opt.
read_optfiles() ->
    Files = [{F, Flag} || Flag <- [ssl_dist_optfile, ktls_filter_optfile],
                          F <- argument_files(Flag)],
    Read = [read_optfile(F, Flag) || {F, Flag} <- Files],
    Opts = lists:append([O || {O, _} <- Read]),
    Sources = [S || {_, S} <- Read, S =/= none],
    DistOpt = case init:get_argument(ssl_dist_opt) of
                  {ok, Args} ->
                      case ktls_filter_tls:from_dist_opt_args(lists:append(Args)) of
                          {ok, Sides} -> [{"-ssl_dist_opt", Sides}];
                          none -> [];
                          {error, Msg} -> throw({config, Msg})
                      end;
                  error ->
                      []
              end,
    {Opts, Sources ++ DistOpt}.

argument_files(Flag) ->
    case init:get_argument(Flag) of
        {ok, Lists} -> [F || [F | _] <- Lists];
        error -> []
    end.

read_optfile(File, Flag) ->
    Source = lists:flatten(io_lib:format("-~s ~ts", [Flag, File])),
    case consult(File) of
        {ok, Terms} ->
            Elements = lists:append([case T of L when is_list(L) -> L; _ -> [T] end
                                     || T <- Terms]),
            {Sides, Opts} = lists:partition(
                              fun({S, _}) -> S =:= server orelse S =:= client;
                                 (_) -> false end, Elements),
            case [T || T <- Opts, not is_kv(T)] of
                [] -> ok;
                [Bad | _] -> throw({config, lists:flatten(io_lib:format(
                                               "~ts: expected {server, SslOptions}, "
                                               "{client, SslOptions} or {Key, Value}, got ~tp",
                                               [Source, Bad]))})
            end,
            %% A side given twice: which one was meant? (ssl would take one
            %% of them without a word.)
            case [S || {S, _} <- Sides] -- [server, client] of
                [] -> ok;
                [Twice | _] -> fail("~ts: {~s, SslOptions} is given more than once: keep one",
                                    [Source, Twice])
            end,
            %% -ssl_dist_optfile always means TLS (as with inet_tls_dist): a
            %% file without the two sides would leave the node on plain TCP.
            case {Flag, Sides} of
                {ssl_dist_optfile, []} ->
                    fail("~ts: no {server, SslOptions} and {client, SslOptions} (an "
                         "-ssl_dist_optfile gives TLS options; plain TCP needs none)", [Source]);
                _ ->
                    ok
            end,
            %% The -ssl_dist_optfile format holds the two sides only (it is
            %% the file of inet_tls_dist nodes, which refuse anything else).
            case {Flag, Opts} of
                {ssl_dist_optfile, [{K, _} | _]} ->
                    fail("~ts: ~tp is not an ssl_dist_optfile entry (only {server, SslOptions} "
                         "and {client, SslOptions}; inet_tls_dist refuses the file): give "
                         "ktls_filter's own options in -ktls_filter_optfile or as -ktls_filter "
                         "~tp Value", [Source, K, K]);
                _ ->
                    ok
            end,
            {Opts, case Sides of
                       [] -> none;
                       _ -> {Source, maps:from_list(Sides)}
                   end};
        {error, Why} ->
            throw({config, lists:flatten(io_lib:format("~ts: ~ts", [Source, Why]))})
    end.

%% @doc file:consult/1 without the file server (usable while the node boots).
-spec consult(file:filename()) -> {ok, [term()]} | {error, string()}.
consult(File) ->
    case prim_file:read_file(File) of
        {ok, Bin} ->
            case unicode:characters_to_list(Bin) of
                Text when is_list(Text) -> parse_terms(Text, 1, []);
                _ -> {error, "not UTF-8 text"}
            end;
        {error, Why} ->
            {error, file:format_error(Why)}
    end.

parse_terms(Text, Line, Acc) ->
    case erl_scan:tokens([], Text, Line) of
        {done, {ok, Tokens, End}, Rest} ->
            case erl_parse:parse_term(Tokens) of
                {ok, Term} ->
                    parse_terms(Rest, End, [Term | Acc]);
                {error, {L, Mod, Desc}} ->
                    %% Not a literal term: an expression, evaluated as OTP
                    %% reads an -ssl_dist_optfile ("dir/" ++ "x.pem", funs).
                    case evaluate(Tokens, Line) of
                        {ok, Term} -> parse_terms(Rest, End, [Term | Acc]);
                        {error, _} = E -> E;
                        not_an_expression -> {error, syntax(L, Mod, Desc)}
                    end
            end;
        {done, {error, {L, Mod, Desc}, _}, _} ->
            {error, syntax(L, Mod, Desc)};
        {done, {eof, _}, _} ->
            {ok, lists:reverse(Acc)};
        {more, _} ->
            case string:trim(Text) of
                "" -> {ok, lists:reverse(Acc)};
                _ -> {error, lists:flatten(io_lib:format("line ~w: a term without its "
                                                         "final '.'", [Line]))}
            end
    end.

evaluate(Tokens, Line) ->
    case erl_parse:parse_exprs(Tokens) of
        {ok, [Expr]} ->
            try erl_eval:expr(Expr, erl_eval:new_bindings()) of
                {value, Term, _} -> {ok, Term}
            catch
                Class:Reason ->
                    {error, lists:flatten(io_lib:format("line ~w: evaluating the term failed: "
                                                        "~tp:~tp", [Line, Class, Reason]))}
            end;
        _ ->
            not_an_expression
    end.

syntax(L, Mod, Desc) ->
    lists:flatten(io_lib:format("line ~w: ~ts", [line(L), Mod:format_error(Desc)])).

line({L, _Col}) -> L;
line(L) -> L.

%% @doc Changes one option at run time: validated like the start-up options,
%% handed to Apply (which pushes it into the NIF), then stored.
-spec set({atom(), term()}, fun((config()) -> ok | {error, term()})) ->
          {ok, Old :: term(), New :: term()} | {error, term()}.
set({Key, Value}, Apply) ->
    case lists:keymember(Key, 1, options()) andalso not lists:member(Key, runtime_options()) of
        true ->
            {error, lists:flatten(
                      io_lib:format("ktls_filter option ~p applies at start only: set it in "
                                    "-ktls_filter_optfile or the application environment "
                                    "and restart the node (options that change at run time: "
                                    "~s)", [Key, lists:join(", ", [atom_to_list(K) ||
                                                                      K <- runtime_options()])]))};
        false ->
            set_runtime({Key, Value}, Apply)
    end.

%% @doc The options config_set/2 may change at run time: the filter's
%% (applied to every connection's next message) and those read per new
%% connection. The rest configure the carrier when it starts.
-spec runtime_options() -> [key()].
runtime_options() ->
    [deep_packet_inspection, filter_mode, max_message_size, max_reassembly_bytes,
     max_open_fragments, allow_mfa, allow_reg_names, system_applications,
     unprotected_applications, max_new_atoms_per_connection, max_new_atoms,
     max_global_message_size, handler, logger_capacity, trusted_peers, verify_node_name,
     connect_timeout, peers].

set_runtime({Key, Value}, Apply) ->
    Old = ?MODULE:get(),
    Fixed = maps:with([tls, tls_source], Old),  % start-up only
    case validate(maps:to_list(maps:without([tls, tls_source], Old)) ++ [{Key, Value}]) of
        {ok, New0} ->
            New = maps:merge(New0, Fixed),
            case Apply(New) of
                ok ->
                    persistent_term:put(?PT_KEY, New),
                    {ok, maps:get(Key, Old), maps:get(Key, New)};
                Error ->
                    Error
            end;
        Error ->
            Error
    end.

%% @doc The validated configuration (loads it on first use).
-spec get() -> config().
get() ->
    case persistent_term:get(?PT_KEY, undefined) of
        undefined ->
            case load() of
                {ok, C} -> C;
                {error, Msg} -> error({ktls_filter_config, Msg})
            end;
        C ->
            C
    end.

-spec get(key()) -> term().
get(Key) ->
    maps:get(Key, ?MODULE:get()).

is_kv({K, _}) when is_atom(K) -> true;
is_kv(_) -> false.

%% @doc Checks a list of {Key, Value}; later entries win. Returns the full
%% configuration with defaults, or an error naming the first bad option.
-spec validate([{atom(), term()}]) -> {ok, config()} | {error, string()}.
validate(KVs) ->
    Table = options(),
    Defaults = maps:from_list([{K, D} || {K, _, D, _} <- Table]),
    Types = maps:from_list([{K, T} || {K, T, _, _} <- Table]),
    try
        Config = lists:foldl(
                   fun({K, V0}, Acc) ->
                           case maps:find(K, Types) of
                               error ->
                                   throw(io_lib:format("unknown ktls_filter option ~tp "
                                                       "(known: ~s)",
                                                       [K, known(Table)]));
                               {ok, Type} ->
                                   case check(Type, V0) of
                                       {ok, V} -> Acc#{K => V};
                                       {error, Why} ->
                                           throw(io_lib:format("ktls_filter option ~tp: ~tp ~ts",
                                                               [K, V0, Why]));
                                       error ->
                                           throw(io_lib:format(
                                                   "ktls_filter option ~tp: ~tp is not ~ts",
                                                   [K, V0, type_name(Type)]))
                                   end
                           end
                   end, Defaults, KVs),
        case maps:get(send_low_watermark, Config) > maps:get(send_high_watermark, Config) of
            true -> throw("ktls_filter option send_low_watermark: must not exceed "
                          "send_high_watermark");
            false -> {ok, Config}
        end
    catch
        throw:Msg -> {error, lists:flatten(Msg)}
    end.

known(Table) ->
    lists:join(", ", [atom_to_list(K) || {K, _, _, _} <- Table]).

check(ip, V) when is_tuple(V), tuple_size(V) =:= 4; is_tuple(V), tuple_size(V) =:= 8 ->
    case inet:ntoa(V) of
        {error, _} -> error;
        _ -> {ok, V}
    end;
check(ip, V) when is_list(V) ->
    case inet:parse_address(V) of
        {ok, Ip} -> {ok, Ip};
        _ -> error
    end;
check(port, V) when is_integer(V), V >= 0, V =< 65535 -> {ok, V};
check(pos_integer, V) when is_integer(V), V > 0 -> {ok, V};
check(non_neg_integer, V) when is_integer(V), V >= 0 -> {ok, V};
check(pos_integer, V) when is_list(V) -> check_int_string(V, 1);
check(non_neg_integer, V) when is_list(V) -> check_int_string(V, 0);
check(port, V) when is_list(V) ->
    case check_int_string(V, 0) of
        {ok, P} when P =< 65535 -> {ok, P};
        _ -> error
    end;
check(boolean, V) when is_boolean(V) -> {ok, V};
check(boolean, "true") -> {ok, true};
check(boolean, "false") -> {ok, false};
check({oneof, Atoms}, V) when is_atom(V) ->
    case lists:member(V, Atoms) of
        true -> {ok, V};
        false -> error
    end;
check({oneof, Atoms}, V) when is_list(V) ->
    check({oneof, Atoms}, list_to_atom(V));
check(peers, V) when is_map(V) ->
    case maps:fold(fun(N, {H, P}, Ok) when is_atom(N), is_integer(P), P > 0, P < 65536,
                                            (is_list(H) orelse is_tuple(H)) ->
                           Ok;
                      (_, _, _) ->
                           false
                   end, true, V) of
        true -> {ok, V};
        false -> error
    end;
check(mfa_list, V) when is_list(V) ->
    case lists:all(fun({M, F, A}) ->
                           is_atom(M) andalso is_atom(F) andalso
                               (A =:= '_' orelse (is_integer(A) andalso A >= 0));
                      (_) -> false
                   end, V) of
        true -> {ok, V};
        false -> error
    end;
check(atom_list, V) when is_list(V) ->
    case lists:all(fun is_atom/1, V) of
        true -> {ok, V};
        false -> error
    end;
check(module_or_undefined, undefined) -> {ok, undefined};
check(module_or_undefined, V) when is_atom(V) -> check_handler(V);
check(trust_rules, V) -> ktls_filter_trust:check_rules(V);
check(_, _) -> error.

%% A handler is a loadable module with the ktls_filter_handler callbacks.
check_handler(M) ->
    case code:ensure_loaded(M) of
        {module, M} ->
            case [io_lib:format("~s/~w", [F, A]) || {F, A} <- [{classify, 3}, {classify, 4}],
                                                    not erlang:function_exported(M, F, A)] of
                [] -> {ok, M};
                Missing -> {error, io_lib:format("does not export ~s (a handler exports both "
                                                 "classify/3 and classify/4: the "
                                                 "ktls_filter_handler behaviour)",
                                                 [lists:join(" and ", Missing)])}
            end;
        {error, Why} ->
            {error, io_lib:format("cannot be loaded: ~p (is its directory in the code path, "
                                  "-pa?)", [Why])}
    end.

check_int_string(S, Min) ->
    try list_to_integer(S) of
        I when I >= Min -> {ok, I};
        _ -> error
    catch
        error:badarg -> error
    end.

type_name(ip) -> "an IP address tuple or string";
type_name(port) -> "a port number 0..65535";
type_name(pos_integer) -> "a positive integer";
type_name(non_neg_integer) -> "a non-negative integer";
type_name(boolean) -> "true or false";
type_name({oneof, As}) -> io_lib:format("one of ~p", [As]);
type_name(peers) -> "a map #{'name@host' => {Host, Port}}";
type_name(mfa_list) -> "a list of {Module, Function, Arity | '_'}";
type_name(atom_list) -> "a list of atoms";
type_name(module_or_undefined) -> "a module name or undefined";
type_name(trust_rules) ->
    "a list of {cert_issuer, PemFile} (a readable file with CA certificates), "
    "{cert_subject, Glob}, {node, Glob} or {all, [Rule]}".

%% @doc What the carrier (ktls_filter_nif:start/1) gets: the configuration
%% with `tls' in the carrier's form (undefined: plain TCP).
-spec carrier_options(config()) -> map().
carrier_options(Config) ->
    maps:remove(tls_source, Config).

%% @doc What the filter engine (ktls_filter_nif:filter_configure/1) gets:
%% the configuration plus `handler_spawn_init', true when the handler
%% module exports spawn_request_init/4 (unsafe spawn requests then go to it).
-spec filter_options(config()) -> map().
filter_options(Config) ->
    Init = case maps:get(handler, Config, undefined) of
               undefined ->
                   false;
               H ->
                   _ = code:ensure_loaded(H),
                   erlang:function_exported(H, spawn_request_init, 4)
           end,
    Config#{handler_spawn_init => Init}.

%% @doc Human-readable table of options and defaults (for docs and --help).
-spec describe() -> iolist().
describe() ->
    [io_lib:format("~-30s default ~tp~n    ~ts~n    type: ~ts~n",
                   [K, D, Doc, type_name(T)]) || {K, T, D, Doc} <- options()].
