//! The usual test bench in one value: a namespace pair, its sender and
//! receiver, and an agent on the receiving veth.

use anyhow::Result;

use crate::{Agent, AgentOptions, NetnsPair, Probe, Receiver, Sender};

/// Fields drop in declaration order: the agent detaches first, the
/// namespaces go last.
#[derive(Debug)]
pub struct Lab {
    pub agent: Agent,
    pub tx: Sender,
    pub rx: Receiver,
    pub pair: NetnsPair,
}

impl Lab {
    /// Checks privileges (panicking with what is missing), builds the pair
    /// and starts an agent with default options.
    pub fn start() -> Result<Self> {
        Self::start_with(AgentOptions::default())
    }

    pub fn start_with(opts: AgentOptions) -> Result<Self> {
        crate::require_privileges();
        Self::on(NetnsPair::new()?, opts)
    }

    /// A lab on a pair the test prepared first (another XDP program on the
    /// receiving veth, say).
    pub fn on(pair: NetnsPair, opts: AgentOptions) -> Result<Self> {
        crate::require_privileges();
        let rx = pair.receiver()?;
        let tx = pair.sender()?;
        let agent = Agent::start_with(&pair, opts)?;
        Ok(Self {
            agent,
            tx,
            rx,
            pair,
        })
    }

    /// A TCP SYN from `src` (an address literal) to the receiving side's `dport`.
    ///
    /// # Panics
    /// If `src` is not an address literal: a test bug.
    pub fn syn(&self, src: &str, dport: u16) -> Probe {
        let src = src
            .parse()
            .unwrap_or_else(|e| panic!("bad test address {src:?}: {e}"));
        self.pair.syn(src, dport)
    }

    /// A UDP datagram from `src` (an address literal) to the receiving side's `dport`.
    ///
    /// # Panics
    /// If `src` is not an address literal: a test bug.
    pub fn udp(&self, src: &str, dport: u16) -> Probe {
        let src = src
            .parse()
            .unwrap_or_else(|e| panic!("bad test address {src:?}: {e}"));
        self.pair.udp(src, dport)
    }

    /// Sends `n` copies of `probe` and returns how many got past XDP.
    pub fn delivered(&self, probe: &Probe, n: u64) -> Result<u64> {
        let before = self.rx.count(probe);
        self.tx.send(probe, n)?;
        self.rx.settle(&self.tx)?;
        Ok(self.rx.count(probe) - before)
    }

    /// Sends `n` copies of a raw frame that is not TCP/UDP with ports (a
    /// truncated one, a later fragment) and returns how many got past XDP.
    /// The frame must be untagged: the receiving kernel strips an outer tag.
    pub fn delivered_frame(&self, frame: &[u8], n: u64) -> Result<u64> {
        let before = self.rx.count_frame(frame);
        for _ in 0..n {
            self.tx.send_frame(frame)?;
        }
        self.rx.settle(&self.tx)?;
        Ok(self.rx.count_frame(frame) - before)
    }
}
