%% @doc Receive ports: the reader of a connection that the VM's own pollset
%% wakes.
%%
%% Once the handshake is done (option `rx_reader', default `port'), the
%% input process of a connection opens a port of the `ktls_filter_nif'
%% driver (the NIF's shared library is also that driver) and attaches the
%% connection to it. The port selects the socket in the VM's pollset; when it
%% is readable a scheduler runs the port, which reads, filters and sends the
%% input process its `{ktls_data, ...}' message on that scheduler, without
%% the carrier thread. The port is linked to the input process: either dies
%% with the other, and the connection with them.
-module(ktls_filter_rx_port).

-export([start_link/0, ensure_loaded/0, available/0, open/1, resume/1]).
-export([keeper_init/1]).

-define(DRIVER, "ktls_filter_nif").
-define(KEEPER, ktls_filter_rx_port_keeper).
-define(LOADED, {?MODULE, driver_loaded}).
-define(ATTACH, 1).
-define(RESUME, 2).

%% @doc The keeper as a child of ktls_filter_sup (a keeper that
%% ensure_loaded/0 started before is linked to the supervisor instead).
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    case whereis(?KEEPER) of
        undefined ->
            proc_lib:start_link(?MODULE, keeper_init, [{supervised, self()}]);
        Pid ->
            true = link(Pid),
            {ok, Pid}
    end.

%% @doc Loads the driver once per node. A driver stays loaded as long as the
%% process that loaded it lives, so a registered keeper process loads it and
%% stays. ok, or why the driver cannot be used (connections then use the
%% ring thread: see available/0).
-spec ensure_loaded() -> ok | {error, term()}.
ensure_loaded() ->
    ensure_loaded(3).

ensure_loaded(0) ->
    {error, keeper_not_started};
ensure_loaded(Tries) ->
    Keeper = case whereis(?KEEPER) of
                 undefined ->
                     Self = self(),
                     spawn(?MODULE, keeper_init, [Self]),
                     receive {?KEEPER, _Started} -> ok after 5000 -> ok end,
                     whereis(?KEEPER);
                 Pid ->
                     Pid
             end,
    case Keeper of
        undefined -> ensure_loaded(Tries - 1);
        _ -> status(Keeper, Tries)
    end.

status(Keeper, Tries) ->
    Ref = erlang:monitor(process, Keeper),
    Keeper ! {status, self(), Ref},
    receive
        {Ref, Status} ->
            erlang:demonitor(Ref, [flush]),
            Status;
        {'DOWN', Ref, process, _, _} ->
            ensure_loaded(Tries - 1)
    end.

%% @doc True when receive ports can be opened on this node (read once per
%% connection: the keeper sets it once, when it has loaded the driver).
-spec available() -> boolean().
available() ->
    persistent_term:get(?LOADED, false).

-spec keeper_init(pid() | {supervised, pid()}) -> no_return().
keeper_init(Starter) ->
    try register(?KEEPER, self()) of
        true ->
            Status = case erl_ddll:load_driver(ktls_filter_nif:priv_dir(), ?DRIVER) of
                         ok ->
                             ok;
                         {error, Reason} = Error ->
                             logger:error("ktls_filter: receive port driver ~s not loaded: ~ts; "
                                          "connections are read by the carrier thread",
                                          [?DRIVER, erl_ddll:format_error(Reason)]),
                             Error
                     end,
            persistent_term:put(?LOADED, Status =:= ok),
            case Starter of
                {supervised, Parent} -> proc_lib:init_ack(Parent, {ok, self()});
                _ -> Starter ! {?KEEPER, true}
            end,
            keeper_loop(Status)
    catch
        error:badarg ->
            %% Another keeper won the race.
            case Starter of
                {supervised, Parent} -> proc_lib:init_ack(Parent, {error, already_started});
                _ -> Starter ! {?KEEPER, false}
            end
    end.

keeper_loop(Status) ->
    receive
        {status, From, Ref} -> From ! {Ref, Status};
        _ -> ok
    end,
    keeper_loop(Status).

%% @doc Opens the receive port of the connection registered under Token (by
%% ktls_filter_nif:start_input/3) and links it to the caller. A connection
%% that closed in the meantime gives a port with nothing to read: the
%% caller learns of the close from its `ktls_closed' message as usual.
-spec open(non_neg_integer()) -> port().
open(Token) ->
    Port = open_port({spawn_driver, ?DRIVER}, [binary]),
    _ = erlang:port_control(Port, ?ATTACH, <<Token:64>>),
    Port.

%% @doc Reading was paused at rx_window and consumed/2 reopened it.
-spec resume(port()) -> ok.
resume(Port) ->
    _ = erlang:port_control(Port, ?RESUME, <<>>),
    ok.
