%% @doc A ktls_filter connection as a socket of OTP's inet module:
%% `{ok, S} = ktls_filter:socket(Node)', then `inet:getstat(S)',
%% `inet:peername(S)', `inet:sockname(S)', `inet:port(S)',
%% `inet:getopts(S, [nodelay])' and `inet:setopts(S, [{nodelay, true}])'.
%% inet_tcp_dist's controller is a port, which those functions take as it
%% is; ktls_filter's controller is a process (as inet_tls_dist's), and inet
%% takes a process only in this `{'$inet', Module, Handle}' form.
%%
%% Statistics are those the carrier keeps: recv_oct, recv_cnt, recv_avg,
%% send_oct, send_cnt, send_avg and send_pend (dist packets and ticks, wire
%% bytes). recv_max, recv_dvi and send_max are not kept (the carrier counts
%% batches of packets, not each one's size) and are left out of the answer;
%% a name that is no inet statistic is {error, einval}.
-module(ktls_filter_socket).

-export([new/1, getstat/2, peername/1, sockname/1, port/1, getopts/2, setopts/2, close/1]).

-type socket() :: {'$inet', ?MODULE, ktls_filter_nif:conn()}.
-export_type([socket/0]).

-define(KEPT, [recv_oct, recv_cnt, recv_avg, send_oct, send_cnt, send_avg, send_pend]).
-define(NOT_KEPT, [recv_max, recv_dvi, send_max]).

-spec new(ktls_filter_nif:conn()) -> socket().
new(Conn) ->
    {'$inet', ?MODULE, Conn}.

-spec getstat(socket(), [atom()]) -> {ok, [{atom(), non_neg_integer()}]} | {error, term()}.
getstat({'$inet', ?MODULE, Conn}, What) when is_list(What) ->
    case [W || W <- What, not lists:member(W, ?KEPT ++ ?NOT_KEPT)] of
        [] ->
            case stats(Conn) of
                {ok, S} -> {ok, [{W, maps:get(W, S)} || W <- What, lists:member(W, ?KEPT)]};
                Error -> Error
            end;
        _ ->
            {error, einval}
    end.

stats(Conn) ->
    try ktls_filter_nif:info(Conn) of
        #{open := false} ->
            {error, closed};
        #{stats := #{bytes_in := RecvOct, bytes_out := SendOct, packets_in := Pi,
                     ticks_in := Ti, packets_out := Po, ticks_out := To,
                     queued_bytes := Pend}} ->
            RecvCnt = Pi + Ti,
            SendCnt = Po + To,
            {ok, #{recv_oct => RecvOct, recv_cnt => RecvCnt, recv_avg => avg(RecvOct, RecvCnt),
                   send_oct => SendOct, send_cnt => SendCnt, send_avg => avg(SendOct, SendCnt),
                   send_pend => Pend}}
    catch
        error:badarg -> {error, closed}
    end.

avg(_, 0) -> 0;
avg(Oct, Cnt) -> Oct div Cnt.

-spec peername(socket()) -> {ok, {inet:ip_address(), inet:port_number()}} | {error, term()}.
peername({'$inet', ?MODULE, Conn}) ->
    safe(fun() -> ktls_filter_nif:peername(Conn) end).

-spec sockname(socket()) -> {ok, {inet:ip_address(), inet:port_number()}} | {error, term()}.
sockname({'$inet', ?MODULE, Conn}) ->
    safe(fun() -> ktls_filter_nif:sockname(Conn) end).

-spec port(socket()) -> {ok, inet:port_number()} | {error, term()}.
port(S) ->
    case sockname(S) of
        {ok, {_, Port}} -> {ok, Port};
        Error -> Error
    end.

%% The socket options net_kernel:getopts/2 and setopts/2 take on a
%% connection (nodelay, priority, tos, sndbuf, recbuf, keepalive).
-spec getopts(socket(), [atom()]) -> {ok, list()} | {error, term()}.
getopts({'$inet', ?MODULE, Conn}, Opts) ->
    safe(fun() -> ktls_filter_dist:conn_getopts(Conn, Opts) end).

-spec setopts(socket(), list()) -> ok | {error, term()}.
setopts({'$inet', ?MODULE, Conn}, Opts) ->
    safe(fun() -> ktls_filter_dist:conn_setopts(Conn, Opts) end).

%% A distribution connection is closed through the VM, which then tells
%% net_kernel and the nodes' monitors: erlang:disconnect_node/1.
-spec close(socket()) -> {error, enotsup}.
close(_) ->
    {error, enotsup}.

safe(F) ->
    try
        F()
    catch
        error:badarg -> {error, closed}
    end.
