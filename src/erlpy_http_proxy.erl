%% @private
%% @doc What a trusted reverse proxy says about the client (option
%% `proxy_headers', on by default, for peers in `forwarded_allow_ips',
%% by default this host only), as gunicorn and uvicorn read it:
%% `X-Forwarded-Proto' (`http' or `https') becomes the request's scheme
%% (`wsgi.url_scheme', the ASGI scope's `scheme'), and `X-Forwarded-For'
%% its client address (`REMOTE_ADDR', the scope's `client', port 0): the
%% rightmost address that is not itself a trusted proxy.  From any other
%% peer these headers are ignored: a client cannot claim an address.
-module(erlpy_http_proxy).

-export([client/3]).

-type allowed() :: [inet:ip_address()] | all.
-export_type([allowed/0]).

%% @doc The request's scheme and client: `{Scheme, {Address, Port}}' with
%% `Peer' the socket's peer (`{Ip, Address, Port}') and `Lower' the request
%% headers, names lower-case.
-spec client(map(), [{binary(), binary()}], {inet:ip_address() | undefined, binary(), inet:port_number()}) ->
          {binary(), {binary(), inet:port_number()}}.
client(#{proxy_headers := true, forwarded_allow_ips := Allowed}, Lower, {Ip, Addr, Port}) ->
    case trusted(Ip, Allowed) of
        false ->
            {<<"http">>, {Addr, Port}};
        true ->
            Scheme = case last_value(<<"x-forwarded-proto">>, Lower) of
                         {ok, V} ->
                             case erlpy_http_conn:lower(first_item(V)) of
                                 <<"https">> -> <<"https">>;
                                 _ -> <<"http">>
                             end;
                         none ->
                             <<"http">>
                     end,
            Client = case last_value(<<"x-forwarded-for">>, Lower) of
                         {ok, V2} ->
                             case forwarded_for(V2, Allowed) of
                                 none -> {Addr, Port};
                                 For -> {For, 0}
                             end;
                         none ->
                             {Addr, Port}
                     end,
            {Scheme, Client}
    end;
client(_Conf, _Lower, {_Ip, Addr, Port}) ->
    {<<"http">>, {Addr, Port}}.

trusted(undefined, _Allowed) -> false;
trusted(_Ip, all) -> true;
trusted(Ip, Allowed) -> lists:member(normal(Ip), Allowed).

%% An IPv4 peer of an IPv6 socket (::ffff:a.b.c.d) is that IPv4 address.
normal({0, 0, 0, 0, 0, 16#ffff, AB, CD}) -> {AB bsr 8, AB band 255, CD bsr 8, CD band 255};
normal(Ip) -> Ip.

%% Every proxy appends the address it got the request from: the client is
%% the rightmost entry that is not a trusted proxy (the leftmost if all
%% are).  `none' (the peer stays the client) when that entry is not an IP
%% address (RFC 7239's `unknown', a name, garbage).  The address is given
%% as inet:ntoa/1 writes it, never as the client sent it.
forwarded_for(Value, Allowed) ->
    Items = [I || I <- [erlpy_http_conn:trim(X) || X <- binary:split(Value, <<",">>, [global])], I =/= <<>>],
    Ips = [parse(I) || I <- Items],
    case {[Ip || Ip <- lists:reverse(Ips), not trusted(Ip, Allowed)], Ips} of
        {[undefined | _], _} -> none;
        {[Client | _], _} -> list_to_binary(inet:ntoa(normal(Client)));
        {[], [Leftmost | _]} -> list_to_binary(inet:ntoa(normal(Leftmost)));
        {[], []} -> none
    end.

parse(Item) ->
    case inet:parse_strict_address(binary_to_list(Item)) of
        {ok, Ip} -> Ip;
        {error, _} -> undefined
    end.

last_value(Name, Lower) ->
    case [V || {N, V} <- Lower, N =:= Name] of
        [] -> none;
        Values -> {ok, lists:last(Values)}
    end.

first_item(V) ->
    erlpy_http_conn:trim(hd(binary:split(V, <<",">>))).
