#!/usr/bin/env escript
%%! -noshell
%% ./ktls epmd-register NAME PORT [--epmd-port P] [--hidden] [--duration S]
%%
%% Registers NAME with the local epmd under PORT, for a node that is up but
%% that epmd does not know (typically one that runs without epmd), so that
%% ordinary tools (net_adm:ping, erl -remsh, epmd -names) find it. Works for
%% any node that listens on PORT, stock or ktls_filter: epmd only maps the
%% name to the port. (A node that uses epmd registers again by itself after
%% an epmd restart: OTP 25's erl_epmd reconnects.)
%%
%% epmd keeps a registration while the registering TCP connection is open,
%% so this stays running and holds it; when epmd goes away (restarted) it
%% registers again as soon as epmd is back. It stops on SIGTERM/Ctrl-C, or
%% after --duration seconds. The epmd port is --epmd-port, else
%% ERL_EPMD_PORT, else 4369.
-mode(compile).

-define(ALIVE2_REQ, 120).
-define(ALIVE2_X_RESP, 118).
-define(ALIVE2_RESP, 121).

main(Args) ->
    try parse(Args, #{epmd_port => default_epmd_port(), type => $M, duration => infinity}) of
        #{name := Name, port := Port} = Opts ->
            Deadline = case maps:get(duration, Opts) of
                           infinity -> infinity;
                           S -> erlang:monotonic_time(millisecond) + S * 1000
                       end,
            loop(Name, Port, Opts, Deadline, none);
        _ ->
            usage()
    catch
        throw:{usage, Msg} ->
            io:format(standard_error, "epmd-register: ~ts~n", [Msg]),
            usage()
    end.

usage() ->
    io:format(standard_error,
              "usage: ./ktls epmd-register NAME PORT [--epmd-port P] [--hidden] "
              "[--duration SECONDS]~n", []),
    halt(2).

default_epmd_port() ->
    case os:getenv("ERL_EPMD_PORT") of
        false -> 4369;
        P -> list_to_integer(P)
    end.

parse([], Opts) ->
    Opts;
parse(["--epmd-port", P | T], Opts) ->
    parse(T, Opts#{epmd_port => port(P, "--epmd-port")});
parse(["--hidden" | T], Opts) ->
    parse(T, Opts#{type => $H});
parse(["--duration", S | T], Opts) ->
    parse(T, Opts#{duration => int(S, "--duration")});
parse(["-" ++ _ = Flag | _], _) ->
    throw({usage, "unknown option " ++ Flag});
parse([Name, Port | T], Opts) when not is_map_key(name, Opts) ->
    case lists:member($@, Name) orelse Name =:= "" of
        true -> throw({usage, "NAME is the part before @ (epmd knows names, not hosts)"});
        false -> parse(T, Opts#{name => Name, port => port(Port, "PORT")})
    end;
parse(Other, _) ->
    throw({usage, "unexpected " ++ lists:join(" ", Other)}).

port(S, What) ->
    case int(S, What) of
        P when P > 0, P < 65536 -> P;
        _ -> throw({usage, What ++ " must be a TCP port number, got " ++ S})
    end.

int(S, What) ->
    try list_to_integer(S)
    catch error:badarg -> throw({usage, What ++ " must be a number, got " ++ S})
    end.

%% Registered: hold the connection until epmd closes it (or the deadline).
%% Not registered: try every second.
loop(Name, Port, Opts, Deadline, State) ->
    Left = case Deadline of
               infinity -> infinity;
               D -> max(0, D - erlang:monotonic_time(millisecond))
           end,
    case Left of
        0 ->
            io:format("epmd-register: ~s: duration over, registration dropped~n", [Name]),
            halt(0);
        _ ->
            ok
    end,
    case register(Name, Port, Opts) of
        {ok, Sock, Creation} ->
            io:format("epmd-register: ~s registered at port ~w (epmd port ~w, creation ~w)~n",
                      [Name, Port, maps:get(epmd_port, Opts), Creation]),
            receive
                {tcp_closed, Sock} ->
                    io:format("epmd-register: epmd closed the registration of ~s; "
                              "registering again when it is back~n", [Name]),
                    loop(Name, Port, Opts, Deadline, lost)
            after Left ->
                    gen_tcp:close(Sock),
                    io:format("epmd-register: ~s: duration over, registration dropped~n", [Name]),
                    halt(0)
            end;
        {error, Why} ->
            _ = State =:= Why orelse
                io:format("epmd-register: ~s not registered (~ts); retrying every second~n",
                          [Name, Why]),
            timer:sleep(1000),
            loop(Name, Port, Opts, Deadline, Why)
    end.

register(Name, Port, #{epmd_port := EpmdPort, type := Type}) ->
    case gen_tcp:connect({127, 0, 0, 1}, EpmdPort, [binary, {packet, 0}, {active, false}], 2000) of
        {ok, Sock} ->
            N = list_to_binary(Name),
            Body = <<?ALIVE2_REQ, Port:16, Type, 0, 6:16, 5:16, (byte_size(N)):16, N/binary,
                     0:16>>,
            ok = gen_tcp:send(Sock, <<(byte_size(Body)):16, Body/binary>>),
            case gen_tcp:recv(Sock, 0, 5000) of
                {ok, <<Resp, 0, Creation/binary>>} when Resp =:= ?ALIVE2_RESP;
                                                        Resp =:= ?ALIVE2_X_RESP ->
                    ok = inet:setopts(Sock, [{active, true}]),
                    {ok, Sock, binary:decode_unsigned(Creation)};
                {ok, <<_, Result, _/binary>>} ->
                    gen_tcp:close(Sock),
                    {error, io_lib:format("epmd refused it (result ~w): is the name taken?",
                                          [Result])};
                {error, Reason} ->
                    gen_tcp:close(Sock),
                    {error, io_lib:format("no answer from epmd: ~p", [Reason])}
            end;
        {error, Reason} ->
            {error, io_lib:format("epmd at 127.0.0.1:~w: ~p", [EpmdPort, Reason])}
    end.
