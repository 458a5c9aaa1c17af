defmodule Elixapp.Application do
  # Calls Python once, then serves priv/elixapp_wsgi.py; writes the call's
  # result and the port to $ELIXAPP_DIR.
  use Application

  @impl true
  def start(_type, _args) do
    priv = to_string(:code.priv_dir(:elixapp))
    {:ok, :none} = :py.eval("__import__('sys').path.insert(0, d.decode())", %{d: priv})
    {:ok, sum} = :py.call(:operator, :add, [1, 2])
    children = [:erlpy_http.child_spec(%{app: "elixapp_wsgi:app", port: 0, name: :elixapp_http})]
    {:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one)
    dir = System.fetch_env!("ELIXAPP_DIR")
    File.write!(Path.join(dir, "call"), inspect(sum))
    File.write!(Path.join(dir, "port"), to_string(:erlpy_http.port(:elixapp_http)))
    {:ok, sup}
  end
end
