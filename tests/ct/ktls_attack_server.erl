%% An application process for ktls_attack_SUITE's legitimate workload on a
%% target node: gen_server calls, casts and replies, processes to monitor,
%% link and exit, messages that carry pids, references and funs as data.
-module(ktls_attack_server).
-behaviour(gen_server).

-export([start/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

%% @doc Starts the server registered as ktls_attack_server (not linked).
-spec start() -> ok.
start() ->
    {ok, _} = gen_server:start({local, ?MODULE}, ?MODULE, [], []),
    ok.

-spec init([]) -> {ok, map()}.
init([]) ->
    {ok, #{}}.

-spec handle_call(term(), gen_server:from(), map()) -> {reply, term(), map()}.
handle_call({echo, Term}, _From, S) ->
    {reply, Term, S};
handle_call({start_child, NotASpec}, _From, S) ->
    %% an application's own start_child request (no start MFA in it)
    {reply, NotASpec, S};
handle_call({get, Key}, _From, S) ->
    {reply, maps:get(Key, S, undefined), S};
handle_call(spawn_child, _From, S) ->
    %% A process that exits with the reason it is sent.
    Pid = spawn(fun() -> receive {exit, Reason} -> exit(Reason) end end),
    {reply, Pid, S};
handle_call(self_pid, _From, S) ->
    {reply, self(), S};
handle_call({whereis, Name}, _From, S) ->
    {reply, whereis(Name), S}.

-spec handle_cast(term(), map()) -> {noreply, map()}.
handle_cast({put, Key, Value}, S) ->
    {noreply, S#{Key => Value}}.

-spec handle_info(term(), map()) -> {noreply, map()}.
handle_info({ping, From, Ref}, S) ->
    From ! {pong, Ref},
    {noreply, S};
handle_info(_Other, S) ->
    %% The flood lands here on nodes without the filter: dropped.
    {noreply, S}.
