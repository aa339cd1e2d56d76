%% @doc The node's carrier lifecycle: the carrier is started and the
%% configuration (options files, application environment) is read and
%% applied once per node. Later changes (ktls_filter:config_set/2: break
%% glass, filter_mode, allow_mfa...) stay until they are changed again;
%% no connection re-reads the configuration. A restart of distribution
%% (net_kernel:stop/0, then start) keeps the running carrier and the
%% configuration in force.
-module(ktls_filter_carrier).
-behaviour(gen_server).

-export([start_link/0, ensure_started/0]).
-export([init/1, handle_call/3, handle_cast/2]).

-define(STARTED, {?MODULE, started}).

-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc ok once the carrier runs with its configuration; the first call
%% starts it (through this server when it runs, so two callers cannot both
%% start it).
-spec ensure_started() -> ok | {error, term()}.
ensure_started() ->
    case persistent_term:get(?STARTED, false) of
        true ->
            ok;
        false ->
            case whereis(?MODULE) of
                undefined -> start_once();
                Pid -> gen_server:call(Pid, ensure_started, infinity)
            end
    end.

init([]) ->
    case start_once() of
        ok -> {ok, #{}};
        {error, Reason} -> {stop, Reason}
    end.

handle_call(ensure_started, _From, State) ->
    {reply, start_once(), State}.

handle_cast(_Msg, State) ->
    {noreply, State}.

start_once() ->
    case persistent_term:get(?STARTED, false) of
        true ->
            ok;
        false ->
            case start() of
                ok ->
                    persistent_term:put(?STARTED, true),
                    ok;
                Error ->
                    Error
            end
    end.

start() ->
    case ktls_filter_config:load() of
        {ok, Config} ->
            ok = ktls_filter_tls:init(),
            ok = ktls_filter_trust:init(),
            case ktls_filter_nif:start(ktls_filter_config:carrier_options(Config)) of
                ok ->
                    _ = maps:get(rx_reader, Config) =:= port andalso
                        ktls_filter_rx_port:ensure_loaded(),
                    case ktls_filter_nif:filter_configure(
                           ktls_filter_config:filter_options(Config)) of
                        ok ->
                            ok;
                        {error, Bad} ->
                            error_logger:error_msg("ktls_filter: filter configuration "
                                                   "refused: ~tp~n", [Bad]),
                            {error, Bad}
                    end;
                {error, {tls, Why}} ->
                    error_logger:error_msg("ktls_filter: TLS options (~ts) refused: ~ts~n",
                                           [maps:get(tls_source, Config), Why]),
                    {error, {tls, Why}};
                {error, Reason} when is_binary(Reason) ->
                    error_logger:error_msg("ktls_filter: carrier failed to start: ~ts~n",
                                           [Reason]),
                    {error, Reason};
                {error, Reason} ->
                    error_logger:error_msg("ktls_filter: carrier failed to start: ~tp~n",
                                           [Reason]),
                    {error, Reason}
            end;
        {error, Msg} ->
            error_logger:error_msg("ktls_filter: ~ts~n", [Msg]),
            {error, {ktls_filter_config, Msg}}
    end.
