defmodule Elixapp.MixProject do
  use Mix.Project

  def project do
    [app: :elixapp, version: "0.1.0", elixir: "~> 1.14",
     deps: [{:erlpy, path: System.fetch_env!("ERLPY_SRC"), manager: :rebar3}]]
  end

  def application do
    [mod: {Elixapp.Application, []}, extra_applications: [:logger]]
  end
end
